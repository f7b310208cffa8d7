"""A real multi-process Dask cluster for the tests: ``dask scheduler`` and ``dask worker``
processes started from the command line on loopback, as an operator would start them.

    with dask_processes(2, logs=tmp_path / "logs") as cluster:
        run(["cen", "run", cfg, "--scheduler", cluster.address])
        addr, pid = cluster.wait_executing("ingest-shard-")   # a worker busy with that task
        cluster.kill_worker(addr)                              # SIGKILL: its nanny restarts it

Every ``dask worker`` runs a nanny (the CLI process) that starts the real worker as a child
process. :meth:`DaskProcesses.kill_worker` SIGKILLs that child only, the realistic fault (an
out-of-memory kill, a segfault): the nanny notices and starts a new worker.
:meth:`DaskProcesses.kill_nanny` SIGKILLs the nanny and its worker, the harsh one (the node is
gone): the cluster has a worker fewer. Everything is stopped by pid, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
from distributed import Client

from cenlib.stac.server import free_port

BIN = Path(sys.executable).parent


@dataclass
class DaskProcesses:
    """A scheduler and its ``dask worker`` processes, and a client to watch them with."""

    address: str
    scheduler: subprocess.Popen[bytes]
    nannies: list[subprocess.Popen[bytes]]
    client: Client
    logs: Path
    nthreads: int = 1
    killed: list[int] = field(default_factory=list)
    """Pids this helper has SIGKILLed, in order."""
    _files: list[IO[bytes]] = field(default_factory=list)

    def add_worker(self) -> subprocess.Popen[bytes]:
        """Start one more ``dask worker`` (a nanny and its worker process)."""
        i = len(self.nannies)
        nanny, f = _spawn(
            _worker_args(self.address, i, self.nthreads), self.logs / f"worker-{i}.log", self.logs
        )
        self.nannies.append(nanny)
        self._files.append(f)
        return nanny

    def worker_pids(self) -> dict[str, int]:
        """Each connected worker's address -> the pid of its worker process."""
        pids: dict[str, int] = self.client.run(os.getpid, on_error="ignore")
        return {a: p for a, p in pids.items() if isinstance(p, int)}

    def nanny_of(self, worker_pid: int) -> subprocess.Popen[bytes]:
        """The ``dask worker`` (nanny) process whose child is ``worker_pid``."""
        parent = psutil.Process(worker_pid).ppid()
        for n in self.nannies:
            if n.pid == parent:
                return n
        raise LookupError(f"pid {worker_pid} is not the child of a dask worker started here")

    def wait_workers(self, n: int, timeout: float = 60.0) -> None:
        self.client.wait_for_workers(n, timeout=timeout)

    def executing(self, prefix: str) -> dict[str, list[str]]:
        """Worker address -> keys of its tasks whose name starts with ``prefix`` that are
        executing now. Asks the workers themselves (their task states), so "executing" means
        the task's function is running there."""

        def keys(dask_worker: Any) -> list[str]:
            # Defined here so that it pickles by value: workers cannot import this module.
            return [
                str(k)
                for k, ts in dask_worker.state.tasks.items()
                if ts.state == "executing" and str(k).startswith(prefix)
            ]

        found = self.client.run(keys, on_error="ignore")
        return {a: ks for a, ks in sorted(found.items()) if isinstance(ks, list) and ks}

    def wait_executing(
        self, prefix: str, timeout: float = 120.0, poll: float = 0.05
    ) -> tuple[str, int, str]:
        """Block until a worker is executing a task whose key starts with ``prefix``; return
        (worker address, worker pid, task key)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for addr, keys in self.executing(prefix).items():
                pid = self.worker_pids().get(addr)
                if pid is not None:
                    return addr, pid, keys[0]
            time.sleep(poll)
        raise TimeoutError(f"no worker executed a task {prefix}* within {timeout} s")

    def kill_worker(self, pid: int) -> None:
        """SIGKILL one worker process (its nanny lives on and starts a new one)."""
        os.kill(pid, signal.SIGKILL)
        self.killed.append(pid)

    def kill_nanny(self, worker_pid: int) -> None:
        """SIGKILL a worker's nanny, then the worker: that ``dask worker`` is gone for good."""
        nanny = self.nanny_of(worker_pid)
        os.kill(nanny.pid, signal.SIGKILL)
        self.killed.append(nanny.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker_pid, signal.SIGKILL)
            self.killed.append(worker_pid)
        nanny.wait(timeout=30)

    def stop(self) -> None:
        """Close the client, then stop every process started here (see :func:`_stop`)."""
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)  # type: ignore[no-untyped-call]
        _stop(self.nannies, self.scheduler, self._files)


def _stop(
    nannies: list[subprocess.Popen[bytes]],
    scheduler: subprocess.Popen[bytes],
    files: list[IO[bytes]],
) -> None:
    """Stop processes by pid: the workers first, then the scheduler; one that outlives
    SIGTERM by 20 s (and any child it left behind) is SIGKILLed."""
    for procs in (nannies, [scheduler]):
        children = [c for p in procs for c in _children(p.pid)]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        _, alive = psutil.wait_procs(children, timeout=10)
        for c in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()
    for f in files:
        f.close()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _worker_args(address: str, i: int, nthreads: int) -> list[str]:
    return [
        str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", str(nthreads),
        "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}",
    ]  # fmt: skip


def _spawn(args: list[str], log: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    f = open(log, "wb")  # noqa: SIM115 - closed by DaskProcesses.stop
    proc = subprocess.Popen(
        args,
        stdout=f,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        start_new_session=True,  # a Ctrl-C of pytest reaches only pytest; stop() ends these
    )
    return proc, f


@contextlib.contextmanager
def dask_processes(
    n_workers: int = 2, *, logs: Path, nthreads: int = 1, timeout: float = 60.0
) -> Iterator[DaskProcesses]:
    """``dask scheduler`` on a free loopback port and ``n_workers`` ``dask worker`` processes
    (each a nanny and one worker process of ``nthreads`` threads), output in ``logs/``; yields
    once every worker has connected, and stops them all on exit."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    files: list[IO[bytes]] = []
    scheduler, f = _spawn(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            ":0",
        ],
        logs / "scheduler.log",
        logs,
    )
    files.append(f)
    nannies: list[subprocess.Popen[bytes]] = []
    cluster: DaskProcesses | None = None
    try:
        for i in range(n_workers):
            nanny, f = _spawn(_worker_args(address, i, nthreads), logs / f"worker-{i}.log", logs)
            nannies.append(nanny)
            files.append(f)
        client = Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
        cluster = DaskProcesses(address, scheduler, nannies, client, logs, nthreads, _files=files)
        cluster.wait_workers(n_workers, timeout)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        else:  # it did not get as far as a client
            _stop(nannies, scheduler, files)


def log_tail(path: Path, n: int = 40) -> str:
    """The last ``n`` lines of a log (for assertion messages)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
