"""A real local HTTP server speaking the OpenAI Chat Completions protocol, with fault injection.

Used by the caption pool's tests (and its benchmark) in place of a paid endpoint. Stdlib only, so
that it can also run in its own process (``python tests/openai_server.py --help``).

    with FakeOpenAI(faults=random_faults(0.2, seed=1), rate_limit=60) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
        ...
        assert fake.max_in_window(60.0) <= 60
        assert max(fake.answered_per_hash().values()) == 1

Serves ``POST /v1/chat/completions``, ``GET /v1/models`` and, for a server in another process,
``GET /_fake/log`` (the request log as JSON; ``?bodies=1`` adds the request bodies). It also serves
the Files and Batches APIs of the OpenAI Batch API (see "Batch API" below).

Fault kinds (see ``FAULTS``), decided per chat request by the ``faults`` schedule:

- ``ok``: a normal completion (after ``latency`` seconds).
- ``429``: status 429 with ``Retry-After`` (``retry_after`` seconds) and ``retry-after-ms``.
- ``500``, ``503``: server errors with an OpenAI-style error body.
- ``timeout``: waits ``timeout_delay`` seconds (more than the client's timeout), then answers if
  the client is still connected.
- ``drop``: closes the connection without a response.
- ``malformed``: status 200, ``Content-Type: application/json``, a truncated JSON body.
- ``empty_choices``: status 200, a valid completion with ``choices: []``.
- ``slow``: answers after ``slow_delay`` seconds.

Besides the schedule, the server itself may refuse a request; its record then carries the
reason as its fault: ``down`` (503 while ``down(mode="503")``), ``rate_limit`` (429 from the
``rate_limit`` option), ``unauthorized`` (401 when ``api_key`` is set and not given),
``bad_request`` (400: body not a JSON object with ``messages``, or ``stream`` asked for) and
``error`` (500: the responder raised).

Every chat request is recorded (``requests``) with its arrival time, body, Authorization header,
fault, status and whether a successful answer was sent (``answered``). A request is *answered*
only when a 200 with a non-empty completion was written to a client still connected, which is
what a provider bills for. Status and answer are recorded just before the bytes leave (and undone
if sending fails), so a client that has seen a response always finds it in the log.

Batch API
    ``POST /v1/files`` (multipart: ``purpose``, ``file``), ``GET /v1/files`` (``purpose``,
    ``order``, ``limit``, ``after``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``,
    ``DELETE /v1/files/{id}``; ``POST /v1/batches``, ``GET /v1/batches`` (``limit``, ``after``;
    newest first), ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``; and, for a server
    in another process, ``GET /_fake/batches`` (files, batches and executed lines as JSON).

    A batch moves one status per ``polls_per_step`` retrieves (``GET /v1/batches/{id}``; listing
    does not move it): ``validating`` -> ``in_progress`` (or ``failed`` with ``errors`` when the
    input file is invalid) -> ``finalizing`` -> ``completed``. The input file is validated as the
    real API does: each line ``{"custom_id", "method": "POST", "url": <the batch's endpoint>,
    "body": {"model", ...}}``, unique custom ids, one model a file, at most ``batch_max_requests``
    lines (50,000) and ``batch_max_bytes`` bytes (200 MB). Lines run through the chat
    ``responder`` when the batch leaves ``in_progress``; answered lines go to the output file
    (``{"id", "custom_id", "response": {"status_code": 200, "request_id", "body":
    <chat.completion>}, "error": null}``), failed ones to the error file.

    ``line_faults`` decides each line's fate (``LINE_FAULTS``): a mapping ``custom_id -> kind``
    (every time that line runs) or ``fn(custom_id, body, seen) -> kind`` where ``seen`` counts
    earlier runs of that custom id on this server (``random_line_faults``). ``500``, ``429`` and
    ``400`` give an error-file line with that ``response.status_code``; ``error`` one with
    ``"response": null, "error": {"code": "server_error", ...}``; ``empty_choices`` and
    ``malformed`` (a body without ``choices``) are 200s in the output file.

    ``batch_faults`` decides each batch's fate (``BATCH_FAULTS``), by creation order (a list) or
    ``fn(n, batch) -> kind``: ``ok``; ``fail`` (fails validation with ``token_limit_exceeded``);
    ``expire`` (runs the first ``expire_completed`` fraction of its lines, then ``expired``: those
    answers in the output file, the rest in the error file as ``batch_expired``); ``hold`` (stays
    ``in_progress`` until the fault is changed or the batch cancelled). A cancelled batch goes
    ``cancelling`` -> ``cancelled`` on the next retrieve, with the lines already run.

    Everything is recorded: ``files`` (uploads and outputs, with their bytes), ``batches``,
    ``batch_lines`` (each executed line and whether it was answered, i.e. billed), ``api_calls``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import re
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FAULTS = ("ok", "429", "500", "503", "timeout", "drop", "malformed", "empty_choices", "slow")
"""Fault kinds a schedule may return."""

SERVER_FAULTS = ("down", "rate_limit", "unauthorized", "bad_request", "error")
"""Reasons the server itself gives (recorded as the fault; never returned by a schedule)."""

DEFAULT_MODEL = "fake-model"

LINE_FAULTS = ("ok", "500", "429", "400", "error", "empty_choices", "malformed")
"""Fates of one line of a batch (see the module doc)."""

BATCH_FAULTS = ("ok", "fail", "expire", "hold")
"""Fates of a whole batch (see the module doc)."""

BATCH_ENDPOINTS = ("/v1/chat/completions",)
"""Endpoints a batch may target on this server (the real API has more; this one runs chats)."""

BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200 * 1024**2
TERMINAL = ("completed", "failed", "expired", "cancelled")
FILE_PURPOSES = (
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
)

Responder = Callable[[dict[str, Any]], str]
FaultFn = Callable[[int, dict[str, Any]], str]
Faults = Sequence[str] | FaultFn | None
LineFaultFn = Callable[[str, dict[str, Any], int], str]
LineFaults = Mapping[str, str] | LineFaultFn | None
BatchFaultFn = Callable[[int, "FakeBatch"], str]
BatchFaults = Sequence[str] | BatchFaultFn | None


def message_hash(messages: Any) -> str:
    """The hash the server keys requests by: sha256 of the canonical JSON of ``messages``."""
    canon = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def echo_responder(request: dict[str, Any]) -> str:
    """The default answer: deterministic, one per distinct list of messages."""
    return f"caption for {message_hash(request.get('messages'))}"


def random_faults(
    rate: float,
    seed: int = 0,
    kinds: Sequence[str] = FAULTS[1:],
    weights: Sequence[float] | None = None,
) -> FaultFn:
    """A schedule faulting each request with probability ``rate``, drawn from ``kinds``.

    The draw for request number n depends only on (seed, n), not on thread timing.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate {rate} not in [0, 1]")
    _check_kinds(kinds)
    if weights is not None and len(weights) != len(kinds):
        raise ValueError("weights and kinds differ in length")

    def decide(n: int, request: dict[str, Any]) -> str:
        rng = random.Random(f"{seed}:{n}")
        if rng.random() >= rate:
            return "ok"
        return rng.choices(list(kinds), weights=weights)[0]

    return decide


def random_line_faults(
    rate: float,
    seed: int = 0,
    kinds: Sequence[str] = ("500",),
    *,
    times: int | None = 1,
) -> LineFaultFn:
    """A ``line_faults`` function failing a seeded fraction ``rate`` of the custom ids, with a
    kind drawn from ``kinds``, on their first ``times`` runs (None: on every run).

    Which ids fail depends only on (seed, custom_id), not on order or timing.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate {rate} not in [0, 1]")
    _check_kinds(kinds, LINE_FAULTS)

    def decide(custom_id: str, body: dict[str, Any], seen: int) -> str:
        rng = random.Random(f"{seed}:{custom_id}")
        if (times is not None and seen >= times) or rng.random() >= rate:
            return "ok"
        return rng.choice(list(kinds))

    return decide


def max_in_window(times: Iterable[float], window: float = 60.0) -> int:
    """The most of ``times`` falling in any half-open interval (t - window, t]."""
    ts = sorted(times)
    best = start = 0
    for i, t in enumerate(ts):
        while t - ts[start] >= window:
            start += 1
        best = max(best, i - start + 1)
    return best


def _check_kinds(kinds: Iterable[str], known: Sequence[str] = FAULTS) -> None:
    bad = sorted(set(kinds) - set(known))
    if bad:
        raise ValueError(f"unknown fault kinds {bad}; known: {', '.join(known)}")


@dataclass
class Request:
    """One chat completion request as the server saw it."""

    n: int
    """Arrival order, from 0."""
    t: float
    """Arrival, ``time.monotonic()`` of the server's process."""
    wall: float
    """Arrival, ``time.time()``."""
    body: dict[str, Any] | None
    """The request JSON (None when it was not a JSON object)."""
    authorization: str | None
    """The Authorization header as sent (e.g. ``Bearer sk-test``)."""
    message_hash: str | None
    """``message_hash(body["messages"])``."""
    fault: str = "ok"
    """The fault applied: one of ``FAULTS`` or ``SERVER_FAULTS``."""
    status: int | None = None
    """HTTP status sent; None when nothing was sent (drop, client gone, shutdown)."""
    answered: bool = False
    """A 200 with a non-empty completion went to a connected client."""
    content: str | None = None
    """The answer's text, when answered."""
    retry_after: float | None = None
    """Seconds announced in Retry-After, for 429s."""
    done: bool = False
    """The server has finished with this request."""

    def to_json(self, bodies: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not bodies:
            out.pop("body")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        return cls(**{"body": None, **data})


@dataclass
class FakeFile:
    """A file held by the server: an upload or a batch's output or error file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def to_json(self) -> dict[str, Any]:
        """The ``FileObject`` the API returns."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.created_at + 30 * 86400 if self.purpose == "batch" else None,
            "status_details": None,
        }

    def lines(self) -> list[Any]:
        """The JSON lines of the file (a line that is not JSON is kept as its text)."""
        out: list[Any] = []
        for line in self.data.decode("utf-8", "replace").splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append(line)
        return out

    def custom_ids(self) -> list[str]:
        """The custom ids of the file's lines, in order (lines without one are skipped)."""
        return [d["custom_id"] for d in self.lines() if isinstance(d, dict) and "custom_id" in d]


@dataclass
class FakeBatch:
    """A batch as the server keeps it (``to_json`` is the ``Batch`` object the API returns)."""

    n: int
    """Creation order, from 0."""
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    fault: str = "ok"
    status: str = "validating"
    model: str | None = None
    times: dict[str, int] = field(default_factory=dict)
    """``in_progress_at``, ``finalizing_at``, ``completed_at``, ... as they happen."""
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    usage: dict[str, Any] | None = None
    polls: int = 0
    """Retrieves since the last status change."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    """The validated input lines."""
    outputs: list[str] = field(default_factory=list)
    errors_out: list[str] = field(default_factory=list)
    ran: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + 86400,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": self.usage,
            "metadata": self.metadata,
        }
        for name in (
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        ):
            out[name] = self.times.get(name)
        return out


@dataclass
class BatchLine:
    """One line of a batch as the server ran it."""

    batch_id: str
    custom_id: str
    fault: str
    """One of ``LINE_FAULTS``, or ``expired`` (never ran)."""
    status: int | None
    """The line's ``response.status_code`` (None for ``error`` and ``expired`` lines)."""
    answered: bool
    """A 200 with a non-empty completion: what a provider bills for."""
    content: str | None = None


@dataclass
class ApiCall:
    """One call to the Files or Batches API."""

    method: str
    path: str
    status: int
    t: float
    lost: bool = False
    """The server did the work, then cut the connection instead of answering
    (``lose_responses``)."""


@dataclass
class _Limiter:
    limit: int
    window: float
    admitted: deque[float] = field(default_factory=deque)

    def admit(self, t: float) -> float | None:
        """None if admitted at t, else the seconds until a slot frees."""
        while self.admitted and t - self.admitted[0] >= self.window:
            self.admitted.popleft()
        if len(self.admitted) >= self.limit:
            return self.admitted[0] + self.window - t
        self.admitted.append(t)
        return None


class _Server(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), so none outlive the server.
    daemon_threads = False
    block_on_close = True
    request_queue_size = 1024  # the default 5 resets bursts of concurrent connections

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Registered from the serving thread, so that after shutdown() every accepted
        # connection is known and can be cut.
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # client went away, or we cut the connection
            return
        self.fake.errors.append(repr(exc))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real provider
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        if fake._batch_api(self, "GET", url.path.rstrip("/"), parse_qs(url.query), b""):
            return
        if url.path.rstrip("/") == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in fake.models
            ]
            self.send_json(200, {"object": "list", "data": data})
        elif url.path == "/_fake/log":
            bodies = parse_qs(url.query).get("bodies", ["0"])[0] not in ("0", "")
            records = [r.to_json(bodies) for r in fake.requests]
            self.send_json(200, {"requests": records})
        else:
            self.send_error_json(404, "not found", "invalid_request_error")

    def do_POST(self) -> None:
        raw = self.read_body()
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        if path == "/v1/chat/completions":
            self.server.fake._chat(self, raw)
        elif not self.server.fake._batch_api(self, "POST", path, parse_qs(url.query), raw):
            self.send_error_json(404, "not found", "invalid_request_error")

    def do_DELETE(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        if not self.server.fake._batch_api(self, "DELETE", path, parse_qs(url.query), b""):
            self.send_error_json(404, "not found", "invalid_request_error")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(payload).encode(), headers)

    def send_raw(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:16]}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_error_json(
        self, status: int, message: str, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        error = {"message": message, "type": kind, "param": None, "code": None}
        self.send_json(status, {"error": error}, headers)

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def peer_closed(self) -> bool:
        """Whether the client has closed its end (e.g. after its own timeout)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class FakeOpenAI:
    """A threaded OpenAI-compatible Chat Completions server on 127.0.0.1, with fault injection.

    Args:
        responder: ``request_json -> answer text``; default ``echo_responder``.
        faults: the schedule: a list of fault kinds indexed by request number (requests past its
            end are ``ok``), or ``fn(n, request_json) -> kind`` (see ``random_faults``), or None.
        retry_after: seconds announced in Retry-After by scheduled 429s (float allowed).
        timeout_delay: how long a ``timeout`` fault waits before answering.
        slow_delay: how long a ``slow`` fault waits before answering.
        latency: delay of every normal answer (emulates generation time).
        rate_limit: at most this many admitted requests in any ``rate_window`` seconds; the
            others get 429 with Retry-After until a slot frees (a sliding-log limiter).
        api_key: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
        models: model ids served by ``GET /v1/models``.
        port: 0 for a free port.
        line_faults: the fate of each batch line (see the module doc), or None (all ``ok``).
        batch_faults: the fate of each batch (see the module doc), or None (all ``ok``).
        polls_per_step: retrieves of a batch that move it one status on.
        expire_completed: the fraction of an ``expire`` batch's lines answered before it expires.
        batch_max_requests, batch_max_bytes: the input file limits a batch is validated against.

    Attributes and settings (``faults``, ``responder``, delays) may be changed while running.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        faults: Faults = None,
        *,
        retry_after: float = 1.0,
        timeout_delay: float = 5.0,
        slow_delay: float = 0.5,
        latency: float = 0.0,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
        api_key: str | None = None,
        models: Sequence[str] = (DEFAULT_MODEL,),
        host: str = "127.0.0.1",
        port: int = 0,
        line_faults: LineFaults = None,
        batch_faults: BatchFaults = None,
        polls_per_step: int = 1,
        expire_completed: float = 0.5,
        batch_max_requests: int = BATCH_MAX_REQUESTS,
        batch_max_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        self.responder: Responder = responder or echo_responder
        self.faults = faults
        self.retry_after = retry_after
        self.timeout_delay = timeout_delay
        self.slow_delay = slow_delay
        self.latency = latency
        self.api_key = api_key
        self.models = tuple(models)
        self.host = host
        self.port = port
        self.errors: list[str] = []
        """Unexpected exceptions in the server's handlers (should stay empty)."""
        self._limiter = _Limiter(rate_limit, rate_window) if rate_limit is not None else None
        self._requests: list[Request] = []
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._down: str | None = None
        self._handler_threads = threading.local()
        if isinstance(faults, Sequence) and not isinstance(faults, str):
            _check_kinds(faults)
        self.line_faults = line_faults
        self.batch_faults = batch_faults
        self.polls_per_step = polls_per_step
        self.expire_completed = expire_completed
        self.batch_max_requests = batch_max_requests
        self.batch_max_bytes = batch_max_bytes
        if isinstance(line_faults, Mapping):
            _check_kinds(line_faults.values(), LINE_FAULTS)
        if isinstance(batch_faults, Sequence) and not isinstance(batch_faults, str):
            _check_kinds(batch_faults, BATCH_FAULTS)
        self._files: dict[str, FakeFile] = {}
        self._batches: dict[str, FakeBatch] = {}
        self._batch_lines: list[BatchLine] = []
        self._api_calls: list[ApiCall] = []
        self._line_runs: Counter[str] = Counter()
        self._lose: list[list[Any]] = []

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> FakeOpenAI:
        if self._server is None:
            self._start()
        return self

    def close(self) -> None:
        """Stop serving, cut every connection, and join every thread the server started."""
        self._down = None
        self._stop()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def down(self, mode: str = "refuse") -> None:
        """Simulate an outage: ``refuse`` closes the port (connection refused, open connections
        cut); ``503`` keeps serving but answers 503 to every chat request."""
        if mode not in ("refuse", "503"):
            raise ValueError(f"down mode {mode!r}: expected 'refuse' or '503'")
        if mode == "refuse":
            self._stop()
        self._down = mode

    def up(self) -> None:
        """End an outage; the server listens again on the same port."""
        self._down = None
        if self._server is None:
            self._start()

    def _start(self) -> None:
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"FakeOpenAI:{self.port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def _stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        if getattr(self._handler_threads, "inside", False):
            raise RuntimeError("the server cannot be stopped from its own threads")
        self._server = self._thread = None
        server.shutdown()  # no more accepts once this returns
        thread.join()
        server.stopping.set()  # wakes handlers waiting out a delay
        server.cut_connections()  # wakes handlers waiting on keep-alive connections
        server.server_close()  # joins the handler threads
        with self._cond:
            self._cond.notify_all()

    # -- the log ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """A snapshot of the chat requests received, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._cond:
            return len(self._requests)

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()

    def wait_for(self, n: int, timeout: float = 10.0, *, done: bool = False) -> bool:
        """Wait until n chat requests have arrived (``done``: and been dealt with)."""

        def reached() -> bool:
            recs = self._requests if not done else [r for r in self._requests if r.done]
            return len(recs) >= n

        with self._cond:
            return self._cond.wait_for(reached, timeout)

    def answered_per_hash(self) -> Counter[str]:
        """Successful answers sent per message hash (a value above 1 is a paid duplicate)."""
        return Counter(r.message_hash for r in self.requests if r.answered and r.message_hash)

    def requests_per_hash(self) -> Counter[str]:
        return Counter(r.message_hash for r in self.requests if r.message_hash)

    def faults_applied(self) -> Counter[str]:
        return Counter(r.fault for r in self.requests)

    def max_in_window(self, window: float = 60.0, *, answered_only: bool = False) -> int:
        """The most chat requests that arrived in any ``window`` seconds."""
        return max_in_window(
            (r.t for r in self.requests if r.answered or not answered_only), window
        )

    # -- serving ---------------------------------------------------------------------------

    def _schedule(self, n: int, body: dict[str, Any]) -> str:
        faults = self.faults
        if faults is None:
            return "ok"
        if callable(faults):
            kind = faults(n, body)
            _check_kinds([kind])
            return kind
        return faults[n] if n < len(faults) else "ok"

    def _chat(self, handler: _Handler, raw: bytes) -> None:
        self._handler_threads.inside = True
        arrival, wall = time.monotonic(), time.time()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = None
        messages = body.get("messages") if body is not None else None
        with self._cond:
            rec = Request(
                n=len(self._requests),
                t=arrival,
                wall=wall,
                body=body,
                authorization=handler.headers.get("Authorization"),
                message_hash=message_hash(messages) if messages is not None else None,
            )
            self._requests.append(rec)
            self._cond.notify_all()
            if self._down == "503":
                rec.fault = "down"
            elif self.api_key is not None and rec.authorization != f"Bearer {self.api_key}":
                rec.fault = "unauthorized"
            elif body is None or not isinstance(messages, list) or body.get("stream"):
                rec.fault = "bad_request"
            elif self._limiter is not None:
                wait = self._limiter.admit(arrival)
                if wait is not None:
                    rec.fault, rec.retry_after = "rate_limit", wait
        try:
            if rec.fault == "ok":
                assert body is not None
                rec.fault = self._schedule(rec.n, body)
            self._respond(handler, rec)
        finally:
            with self._cond:
                rec.done = True
                self._cond.notify_all()

    def _respond(self, handler: _Handler, rec: Request) -> None:
        fault = rec.fault
        if fault == "down":
            self._error(handler, rec, 503, "endpoint down (simulated)", "server_error")
        elif fault == "unauthorized":
            self._error(handler, rec, 401, "Incorrect API key provided", "invalid_request_error")
        elif fault == "bad_request":
            why = "streaming is not supported" if rec.body else "body must be JSON with messages"
            self._error(handler, rec, 400, why, "invalid_request_error")
        elif fault in ("rate_limit", "429"):
            wait = rec.retry_after if fault == "rate_limit" else self.retry_after
            assert wait is not None
            rec.retry_after = wait
            headers = {
                "Retry-After": str(math.ceil(wait)) if fault == "rate_limit" else _seconds(wait),
                "retry-after-ms": str(math.ceil(wait * 1000)),
            }
            self._error(
                handler, rec, 429, "Rate limit reached (simulated)", "requests", headers=headers
            )
        elif fault in ("500", "503"):
            self._error(handler, rec, int(fault), "server error (simulated)", "server_error")
        elif fault == "drop":
            handler.drop()
        elif fault == "malformed":
            body = b'{"id": "chatcmpl-broken", "object": "chat.completion", "ch'
            with _recorded(rec, 200):
                handler.send_raw(200, body)
        else:  # ok, slow, timeout, empty_choices
            delay = {"slow": self.slow_delay, "timeout": self.timeout_delay}.get(
                fault, self.latency
            )
            if delay > 0 and handler.server.stopping.wait(delay):
                handler.drop()  # shutting down or going down
                return
            if delay > 0 and handler.peer_closed():
                handler.close_connection = True
                return
            assert rec.body is not None
            try:
                content = self.responder(rec.body)
            except Exception as exc:
                rec.fault = "error"
                self._error(handler, rec, 500, f"responder failed: {exc!r}", "server_error")
                return
            payload = _completion(rec.body, content, empty=fault == "empty_choices")
            answered = fault != "empty_choices" and bool(content)
            with _recorded(rec, 200, content if answered else None):
                handler.send_json(200, payload)

    @staticmethod
    def _error(
        handler: _Handler,
        rec: Request,
        status: int,
        message: str,
        kind: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        with _recorded(rec, status):
            handler.send_error_json(status, message, kind, headers)

    # -- the Batch API: records ---------------------------------------------------------

    @property
    def files(self) -> list[FakeFile]:
        """Every file the server holds (uploads, then outputs, in creation order)."""
        with self._cond:
            return list(self._files.values())

    def uploads(self, purpose: str | None = "batch") -> list[FakeFile]:
        """The files clients uploaded (with ``purpose``, or all), in upload order."""
        return [
            f for f in self.files if f.purpose != "batch_output" and purpose in (None, f.purpose)
        ]

    @property
    def batches(self) -> list[FakeBatch]:
        """Every batch created, in creation order."""
        with self._cond:
            return list(self._batches.values())

    @property
    def batch_lines(self) -> list[BatchLine]:
        """Every batch line the server ran (or expired), in order."""
        with self._cond:
            return list(self._batch_lines)

    @property
    def api_calls(self) -> list[ApiCall]:
        """Every Files/Batches API call, in order."""
        with self._cond:
            return list(self._api_calls)

    def calls(self, method: str, path_prefix: str) -> list[ApiCall]:
        """The API calls of ``method`` whose path starts with ``path_prefix``."""
        return [c for c in self.api_calls if c.method == method and c.path.startswith(path_prefix)]

    def answered_per_custom_id(self) -> Counter[str]:
        """Batch lines answered per custom id (a value above 1 was paid twice)."""
        return Counter(line.custom_id for line in self.batch_lines if line.answered)

    def lose_responses(self, method: str, path_prefix: str, times: int = 1) -> None:
        """Do the next ``times`` Files/Batches calls of ``method`` under ``path_prefix``, then
        cut the connection instead of answering: the client cannot know they happened."""
        with self._cond:
            self._lose.append([method, path_prefix, times])

    def file_of(self, batch: FakeBatch) -> FakeFile:
        """The input file of a batch."""
        with self._cond:
            return self._files[batch.input_file_id]

    # -- the Batch API: serving -------------------------------------------------------

    def _batch_api(
        self, handler: _Handler, method: str, path: str, query: dict[str, list[str]], raw: bytes
    ) -> bool:
        """Serve a Files/Batches call; False when ``path`` is none of theirs."""
        parts = path.strip("/").split("/")
        if path == "/_fake/batches" and method == "GET":
            handler.send_json(200, self._dump())
            return True
        if len(parts) < 2 or parts[0] != "v1" or parts[1] not in ("files", "batches"):
            return False
        self._handler_threads.inside = True
        if self.api_key is not None and handler.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            status, payload = 401, _api_error("Incorrect API key provided", "invalid_api_key")
        else:
            try:
                status, payload = self._route(method, parts[1:], query, raw, handler)
            except Exception as exc:  # a bug of ours: say so, as a 500
                self.errors.append(repr(exc))
                status, payload = 500, _api_error(f"fake server error: {exc!r}", None)
        with self._cond:
            lost = False
            for rule in self._lose:
                if rule[2] > 0 and rule[0] == method and path.startswith(rule[1]):
                    rule[2] -= 1
                    lost = True
                    break
            self._api_calls.append(ApiCall(method, path, status, time.monotonic(), lost))
        if lost:
            handler.drop()
        elif isinstance(payload, bytes):
            handler.send_raw(status, payload, content_type="application/octet-stream")
        else:
            handler.send_json(status, payload)
        return True

    def _route(
        self,
        method: str,
        parts: list[str],
        query: dict[str, list[str]],
        raw: bytes,
        handler: _Handler,
    ) -> tuple[int, Any]:
        kind, rest = parts[0], parts[1:]
        q = {k: v[-1] for k, v in query.items()}
        with self._cond:
            if kind == "files":
                if method == "POST" and not rest:
                    return self._upload(handler.headers.get("Content-Type", ""), raw)
                if method == "GET" and not rest:
                    files = [
                        f for f in self._files.values() if q.get("purpose") in (None, f.purpose)
                    ]
                    if q.get("order", "desc") == "desc":
                        files.reverse()
                    return 200, _page([f.to_json() for f in files], q, 10_000)
                f = self._files.get(rest[0])
                if f is None:
                    return 404, _api_error(f"No such File object: {rest[0]}", None, "id")
                if method == "GET" and len(rest) == 1:
                    return 200, f.to_json()
                if method == "GET" and rest[1:] == ["content"]:
                    return 200, f.data
                if method == "DELETE" and len(rest) == 1:
                    del self._files[f.id]
                    return 200, {"id": f.id, "object": "file", "deleted": True}
            else:
                if method == "POST" and not rest:
                    return self._create_batch(raw)
                if method == "GET" and not rest:
                    batches = [b.to_json() for b in reversed(self._batches.values())]
                    return 200, _page(batches, q, 20, max_limit=100)
                b = self._batches.get(rest[0])
                if b is None:
                    return 404, _api_error(f"No batch found with id '{rest[0]}'.", None, "id")
                if method == "GET" and len(rest) == 1:
                    b.polls += 1
                    if b.polls >= self.polls_per_step:
                        self._advance(b)
                    return 200, b.to_json()
                if method == "POST" and rest[1:] == ["cancel"]:
                    if b.status not in ("validating", "in_progress", "finalizing"):
                        why = f"Cannot cancel a batch with status '{b.status}'."
                        return 409, _api_error(why, None)
                    self._set_status(b, "cancelling")
                    return 200, b.to_json()
        return 404, _api_error("not found", None)

    def _upload(self, content_type: str, raw: bytes) -> tuple[int, Any]:
        form = _multipart(content_type, raw)
        if form is None:
            return 400, _api_error("expected a multipart/form-data body", None)
        purpose = form.get("purpose", (None, b""))[1].decode()
        if "file" not in form:
            return 400, _api_error("Missing required parameter: 'file'.", None, "file")
        if purpose not in FILE_PURPOSES:
            why = f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'"
            return 400, _api_error(why, None, "purpose")
        filename, data = form["file"]
        f = self._new_file(filename or "upload", purpose, data)
        return 200, f.to_json()

    def _new_file(self, filename: str, purpose: str, data: bytes) -> FakeFile:
        f = FakeFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, data, int(time.time()))
        self._files[f.id] = f
        return f

    def _create_batch(self, raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return 400, _api_error("body must be a JSON object", None)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return 400, _api_error(f"Missing required parameter: '{name}'.", None, name)
        f = self._files.get(body["input_file_id"])
        if f is None:
            why = f"No such File object: {body['input_file_id']}"
            return 404, _api_error(why, None, "input_file_id")
        if f.purpose != "batch":
            why = f"File {f.id} has purpose '{f.purpose}', not 'batch'"
            return 400, _api_error(why, None, "input_file_id")
        if body["endpoint"] not in BATCH_ENDPOINTS:
            why = f"endpoint {body['endpoint']!r}: this server runs {list(BATCH_ENDPOINTS)}"
            return 400, _api_error(why, None, "endpoint")
        if body["completion_window"] != "24h":
            return 400, _api_error("completion_window must be '24h'", None, "completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and len(metadata) <= 16
            and all(isinstance(k, str) and len(k) <= 64 for k in metadata)
            and all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
        ):
            why = "metadata: at most 16 pairs, keys <= 64 and values <= 512 characters"
            return 400, _api_error(why, None, "metadata")
        n = len(self._batches)
        b = FakeBatch(
            n=n,
            id=f"batch_{uuid.uuid4().hex[:24]}",
            input_file_id=f.id,
            endpoint=body["endpoint"],
            completion_window="24h",
            metadata=metadata,
            created_at=int(time.time()),
        )
        faults = self.batch_faults
        if callable(faults):
            b.fault = faults(n, b)
        elif faults is not None:
            b.fault = faults[n] if n < len(faults) else "ok"
        _check_kinds([b.fault], BATCH_FAULTS)
        self._batches[b.id] = b
        return 200, b.to_json()

    def _set_status(self, b: FakeBatch, status: str) -> None:
        b.status, b.polls = status, 0
        b.times[f"{status}_at"] = int(time.time())

    def _advance(self, b: FakeBatch) -> None:
        """Move a batch one status on (called with the lock held)."""
        if b.status == "validating":
            errors = self._validate(b)
            if b.fault == "fail" and not errors:
                why = "Enqueued token limit reached for this model (simulated)."
                errors = [{"code": "token_limit_exceeded", "message": why}]
            if errors:
                b.errors = [{"param": None, "line": None, **e} for e in errors]
                self._set_status(b, "failed")
            else:
                b.total = len(b.requests)
                self._set_status(b, "in_progress")
        elif b.status == "in_progress":
            if b.fault == "hold":
                return
            if b.fault == "expire":
                done = math.floor(self.expire_completed * len(b.requests))
                self._run_lines(b, b.requests[:done])
                for req in b.requests[done:]:
                    why = "This request could not be executed before the completion window expired."
                    self._error_line(b, req["custom_id"], "expired", None, "batch_expired", why)
                self._write_outputs(b)
                self._set_status(b, "expired")
            else:
                self._run_lines(b, b.requests)
                self._set_status(b, "finalizing")
        elif b.status == "finalizing":
            self._write_outputs(b)
            self._set_status(b, "completed")
        elif b.status == "cancelling":
            self._write_outputs(b)
            self._set_status(b, "cancelled")

    def _validate(self, b: FakeBatch) -> list[dict[str, Any]]:
        """The input file's errors as the real API reports them (an empty list: valid)."""
        f = self._files.get(b.input_file_id)
        if f is None:
            return [{"code": "file_not_found", "message": f"File {b.input_file_id} was deleted."}]
        if len(f.data) > self.batch_max_bytes:
            why = (
                f"The batch input file is larger than the {self.batch_max_bytes} maximum "
                f"({len(f.data)} bytes)."
            )
            return [{"code": "file_too_large", "message": why}]
        lines = f.data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if not lines:
            return [{"code": "empty_file", "message": "The batch input file is empty."}]
        if len(lines) > self.batch_max_requests:
            why = (
                f"The batch input file has {len(lines)} requests, more than the maximum of "
                f"{self.batch_max_requests}."
            )
            return [{"code": "too_many_requests", "message": why}]
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        requests = []
        for i, line in enumerate(lines, 1):
            try:
                req = json.loads(line)
            except ValueError:
                req = None
            if not isinstance(req, dict):
                why = "This line is not parseable as valid JSON."
                errors.append({"code": "invalid_json_line", "message": why, "line": i})
                continue
            missing = [k for k in ("custom_id", "method", "url", "body") if k not in req]
            body = req.get("body")
            if missing:
                why = f"Missing required parameter: '{missing[0]}'."
                errors.append({"code": "missing_required_parameter", "message": why, "line": i})
            elif not isinstance(req["custom_id"], str) or not req["custom_id"]:
                why = "custom_id must be a non-empty string."
                errors.append({"code": "invalid_custom_id", "message": why, "line": i})
            elif req["custom_id"] in seen:
                why = (
                    "The custom_id for this request is a duplicate of another request. The "
                    "custom_id parameter must be unique for each request in a batch."
                )
                errors.append({"code": "duplicate_custom_id", "message": why, "line": i})
            elif req["method"] != "POST":
                why = f"Method {req['method']!r} is not supported; use 'POST'."
                errors.append({"code": "invalid_method", "message": why, "line": i})
            elif req["url"] != b.endpoint:
                why = (
                    "The URL provided for this request does not match the batch endpoint "
                    f"{b.endpoint}."
                )
                errors.append({"code": "invalid_url", "message": why, "line": i})
            elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
                why = "The request body must be a JSON object with a 'model'."
                errors.append({"code": "invalid_request", "message": why, "line": i})
            else:
                seen.add(req["custom_id"])
                models.add(body["model"])
                if len(models) > 1:
                    why = "Each batch input file may only hold requests to a single model."
                    errors.append({"code": "mismatched_model", "message": why, "line": i})
                    models.discard(body["model"])
                requests.append(req)
            if len(errors) >= 100:
                break
        if not errors:
            b.requests = requests
            b.model = next(iter(models))
        return errors

    def _line_fault(self, custom_id: str, body: dict[str, Any], seen: int) -> str:
        faults = self.line_faults
        if faults is None:
            return "ok"
        kind = faults(custom_id, body, seen) if callable(faults) else faults.get(custom_id, "ok")
        _check_kinds([kind], LINE_FAULTS)
        return kind

    def _run_lines(self, b: FakeBatch, requests: list[dict[str, Any]]) -> None:
        usage = b.usage or {"input_tokens": 0, "output_tokens": 0}
        for req in requests:
            cid, body = req["custom_id"], req["body"]
            kind = self._line_fault(cid, body, self._line_runs[cid])
            self._line_runs[cid] += 1
            rid = f"req_{uuid.uuid4().hex[:24]}"
            if kind in ("500", "429", "400"):
                status = int(kind)
                error_type = "server_error" if status >= 500 else "invalid_request_error"
                err = _api_error(f"HTTP {status} (simulated)", None, kind=error_type)
                self._error_line(
                    b, cid, kind, {"status_code": status, "request_id": rid, "body": err}
                )
                continue
            if kind == "error":
                self._error_line(b, cid, kind, None, "server_error", "line failed (simulated)")
                continue
            if not isinstance(body.get("messages"), list):
                err = _api_error("'messages' is a required property", None, "messages")
                self._error_line(
                    b, cid, "400", {"status_code": 400, "request_id": rid, "body": err}
                )
                continue
            try:
                content = self.responder(body)
            except Exception as exc:
                err = _api_error(f"responder failed: {exc!r}", None)
                self._error_line(
                    b, cid, "500", {"status_code": 500, "request_id": rid, "body": err}
                )
                continue
            payload = _completion(body, content, empty=kind == "empty_choices")
            if kind == "malformed":
                del payload["choices"]
            answered = kind == "ok" and bool(content)
            usage["input_tokens"] += payload["usage"]["prompt_tokens"]
            usage["output_tokens"] += payload["usage"]["completion_tokens"]
            line = {
                "id": f"batch_req_{uuid.uuid4().hex[:24]}",
                "custom_id": cid,
                "response": {"status_code": 200, "request_id": rid, "body": payload},
                "error": None,
            }
            b.outputs.append(json.dumps(line))
            b.completed += 1
            self._batch_lines.append(
                BatchLine(b.id, cid, kind, 200, answered, content if answered else None)
            )
        total = usage["input_tokens"] + usage["output_tokens"]
        b.usage = {
            "input_tokens": usage["input_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage["output_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": total,
        }
        b.ran = True

    def _error_line(
        self,
        b: FakeBatch,
        custom_id: str,
        kind: str,
        response: dict[str, Any] | None,
        code: str | None = None,
        message: str | None = None,
    ) -> None:
        error = None if code is None else {"code": code, "message": message}
        line = {
            "id": f"batch_req_{uuid.uuid4().hex[:24]}",
            "custom_id": custom_id,
            "response": response,
            "error": error,
        }
        b.errors_out.append(json.dumps(line))
        b.failed += 1
        status = response["status_code"] if response is not None else None
        self._batch_lines.append(BatchLine(b.id, custom_id, kind, status, False))

    def _write_outputs(self, b: FakeBatch) -> None:
        if b.outputs:
            data = ("\n".join(b.outputs) + "\n").encode()
            b.output_file_id = self._new_file(f"{b.id}_output.jsonl", "batch_output", data).id
        if b.errors_out:
            data = ("\n".join(b.errors_out) + "\n").encode()
            b.error_file_id = self._new_file(f"{b.id}_error.jsonl", "batch_output", data).id

    def _dump(self) -> dict[str, Any]:
        with self._cond:
            files = [
                {**f.to_json(), "custom_ids": f.custom_ids() if f.purpose == "batch" else None}
                for f in self._files.values()
            ]
            batches = [{**b.to_json(), "fault": b.fault} for b in self._batches.values()]
            lines = [asdict(x) for x in self._batch_lines]
        return {"files": files, "batches": batches, "lines": lines}


def _api_error(
    message: str, code: str | None, param: str | None = None, kind: str = "invalid_request_error"
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _page(
    items: list[dict[str, Any]], q: dict[str, str], default: int, max_limit: int = 10_000
) -> dict[str, Any]:
    """A cursor page (``after`` = the id of the last item of the previous page)."""
    limit = max(1, min(int(q.get("limit", default)), max_limit))
    after = q.get("after")
    if after is not None:
        ids = [x["id"] for x in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_DISPOSITION = re.compile(r'(\w+)="([^"]*)"')


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]] | None:
    """The fields of a multipart/form-data body: name -> (filename, bytes); None if not one."""
    m = _BOUNDARY.search(content_type)
    if not content_type.startswith("multipart/form-data") or m is None:
        return None
    delimiter = b"\r\n--" + m.group(1).encode()
    form: dict[str, tuple[str | None, bytes]] = {}
    for part in (b"\r\n" + raw).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.partition(b"\r\n\r\n")
        params: dict[str, str] = {}
        for header in head.decode("utf-8", "replace").split("\r\n"):
            if header.lower().startswith("content-disposition:"):
                params = dict(_DISPOSITION.findall(header))
        if "name" in params:
            form[params["name"]] = (params.get("filename"), data)
    return form


@contextlib.contextmanager
def _recorded(rec: Request, status: int, content: str | None = None) -> Iterator[None]:
    """Record what is being sent before it leaves (a client that has seen a response finds it
    in the log), and undo it if sending fails."""
    rec.status, rec.answered, rec.content = status, content is not None, content
    try:
        yield
    except BaseException:
        rec.status, rec.answered, rec.content = None, False, None
        raise


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _tokens(text: str) -> int:
    """A rough token count (4 characters a token), enough for usage fields."""
    return max(1, math.ceil(len(text) / 4))


def _prompt_text(messages: Iterable[Any]) -> Iterator[str]:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]
                elif isinstance(part, dict):
                    yield "x" * 340  # an image part: about 85 tokens, OpenAI's low-detail cost


def _completion(body: dict[str, Any], content: str, *, empty: bool = False) -> dict[str, Any]:
    prompt_tokens = _tokens("".join(_prompt_text(body.get("messages") or [])))
    completion_tokens = _tokens(content)
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or DEFAULT_MODEL,
        "choices": [] if empty else [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_fake",
    }


def fetch_log(base_url: str, bodies: bool = False, timeout: float = 10.0) -> list[Request]:
    """The request log of a server running elsewhere (e.g. in another process)."""
    from urllib.request import urlopen

    root = base_url.rstrip("/").removesuffix("/v1")
    with urlopen(f"{root}/_fake/log?bodies={int(bodies)}", timeout=timeout) as resp:
        return [Request.from_json(r) for r in json.load(resp)["requests"]]


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; print the base URL on the first line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--fault-kinds", default=",".join(k for k in FAULTS if k != "ok"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--timeout-delay", type=float, default=5.0)
    parser.add_argument("--slow-delay", type=float, default=0.5)
    parser.add_argument("--rate-limit", type=int, default=None)
    parser.add_argument("--rate-window", type=float, default=60.0)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    faults = None
    if args.fault_rate > 0:
        faults = random_faults(args.fault_rate, args.seed, args.fault_kinds.split(","))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakeOpenAI(
        faults=faults,
        retry_after=args.retry_after,
        timeout_delay=args.timeout_delay,
        slow_delay=args.slow_delay,
        latency=args.latency,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        api_key=args.api_key,
        port=args.port,
    ) as fake:
        print(fake.base_url, flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
