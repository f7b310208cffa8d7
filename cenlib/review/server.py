"""Serving the review app with uvicorn: :func:`serve_review` (blocks) and :class:`ReviewServer`
(a context manager running it in a thread, for tests and notebooks).

The socket is bound before uvicorn starts, so the URL (with its port, when ``port=0`` asked
for any free one) is known and printed before the first request can arrive.
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import threading
import webbrowser
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import uvicorn

from cenlib.errors import CenError
from cenlib.review.app import build_app, new_token
from cenlib.review.patches import ReviewRun


class ReviewServerError(CenError, RuntimeError):
    """The server could not start: the message names the address or the run at fault."""


def default_reviewer() -> str:
    """Who signs decisions when no ``--reviewer`` is given: the login name."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "reviewer"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ReviewServerError(
            f"cannot listen on {host}:{port} ({e}); pick another --port, or 0 for any free one"
        ) from e
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


class _Prepared:
    """A run read for review, an app behind a fresh token, a bound socket, a uvicorn server."""

    def __init__(self, run_dir: Path, host: str, port: int, reviewer: str | None) -> None:
        self.token = new_token()
        app = build_app(ReviewRun(run_dir), self.token, reviewer or default_reviewer())
        self.sock = _bind(host, port)
        bound = self.sock.getsockname()[1]
        self.url = _url(host, bound, self.token)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()


def serve_review(
    run_dir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    reviewer: str | None = None,
    open_browser: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the review of the run at ``run_dir`` until Ctrl-C.

    ``on_ready(url)`` is called with the page's URL (it carries the access token) once the
    server listens; without it the URL is printed. ``port=0`` takes any free port.
    """
    prepared = _Prepared(Path(run_dir), host, port, reviewer)
    (on_ready or (lambda url: print(f"review: {url}", flush=True)))(prepared.url)
    if open_browser:
        webbrowser.open(prepared.url)  # connections wait in the socket's backlog until served
    # uvicorn shuts down cleanly on Ctrl-C, then re-raises the signal: that is how one stops.
    with contextlib.suppress(KeyboardInterrupt):
        prepared.run()


class ReviewServer:
    """The review app served from a thread while the ``with`` block runs; ``.url`` has the token.

    >>> with ReviewServer(run_dir) as server:  # doctest: +SKIP
    ...     urllib.request.urlopen(server.url)
    """

    def __init__(
        self,
        run_dir: Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        reviewer: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.host, self.port, self.reviewer = host, port, reviewer
        self._prepared: _Prepared | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's URL with ``?token=``; only while the server runs."""
        if self._prepared is None:
            raise ReviewServerError("the review server is not running; use it in a `with` block")
        return self._prepared.url

    @property
    def token(self) -> str:
        return self.url.rsplit("token=", 1)[1]

    @property
    def base(self) -> str:
        """``http://host:port`` (no token), for building request URLs."""
        return self.url.split("/?", 1)[0]

    def __enter__(self) -> ReviewServer:
        prepared = _Prepared(self.run_dir, self.host, self.port, self.reviewer)
        thread = threading.Thread(target=prepared.run, name="cen-review", daemon=True)
        thread.start()
        for _ in range(200):  # up to 10 s
            if prepared.server.started or not thread.is_alive():
                break
            thread.join(0.05)
        if not prepared.server.started:
            prepared.server.should_exit = True
            thread.join(5)
            raise ReviewServerError(f"the review server of {self.run_dir} did not start")
        self._prepared, self._thread = prepared, thread
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._prepared is not None and self._thread is not None:
            self._prepared.server.should_exit = True
            self._thread.join(10)
        self._prepared = self._thread = None
