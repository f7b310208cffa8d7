"""A loopback HTTP server that serves files the way an object store serves COGs (issue 14).

Tests and benchmarks read real COGs over real HTTP (GDAL's ``/vsicurl/``, rasterio, urllib) at
the latency, bandwidth and failure rates of a cloud store without leaving the machine:
``serve_files(root, ServeOptions(...))`` runs starlette on uvicorn in a thread and yields a
:class:`FileServer` with the URL, a log of every request and its counters. :func:`rehref` points
STAC items at it.

What it answers is what S3 or Azure Blob answer: GET and HEAD; one byte range per request (a
header with several ranges is ignored and the whole object comes back with 200, as S3 does);
416 for a range past the end; 404 for anything that is not a file under the root (directories
are never listed); error bodies in Azure's XML.

Signed URLs (``ServeOptions(token_ttl=...)``) speak the Planetary Computer's protocol: ``GET
/api/sas/v1/token/<container>`` (a container is a top-level directory of the root) answers
``{"token": "<query string>", "msft:expiry": "<RFC 3339>"}``, and ``href + "?" + token`` reads
any file of that container until the expiry, then gets Azure's 403. :meth:`FileServer.sign`
signs one path directly. :data:`TOKEN_API` is the path a client asks.

Read it with ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` when GDAL runs in the same process:
rasterio holds the GIL while GDAL probes sidecar files (``.aux.xml``, ``.msk``, a directory
listing) as it reads the geotransform, so the server's thread cannot answer those probes and
each one waits for curl's timeout (forever without ``GDAL_HTTP_TIMEOUT``). Dask worker
processes, as the job uses, are not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import mimetypes
import re
import secrets
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import escape

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cenlib.errors import CenError

Json = dict[str, Any]
FaultKind = Literal["error", "reset", "slow"]
FAULT_KINDS: tuple[FaultKind, ...] = ("error", "reset", "slow")

_CHUNK = 64 * 1024
TOKEN_API = "/api/sas/v1/token"  # + "/<container>": the Planetary Computer's SAS token API path
_TRANSPORT = "cenlib.files.transport"  # scope key: the connection's transport, for resets


class FileServerError(CenError, RuntimeError):
    """The file server could not start, or was asked for something outside its root."""


@dataclass(frozen=True)
class Faults:
    """Faults injected per request. Whether a request gets one is a draw keyed by the seed, the
    request (method, path, Range) and how many times that same request came before, so a run
    is reproducible whatever the interleaving of concurrent requests, and a retry draws anew.

    A 503 can answer any request that passed the token check; a reset (headers and the first
    half of the body, then a TCP RST: "Connection reset by peer") or a stall (the body stops
    for `slow_seconds` at its half) only a GET of an object's bytes (200 or 206). A client
    whose next requests depend on what it received (GDAL resumes after a reset from the bytes
    it got) may still take a different path from run to run."""

    error_rate: float = 0.0
    reset_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "reset_rate", "slow_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise FileServerError(f"Faults.{name} = {rate}: a probability in [0, 1]")
        if self.slow_seconds < 0:
            raise FileServerError(f"Faults.slow_seconds = {self.slow_seconds}: must be >= 0")


@dataclass(frozen=True)
class ServeOptions:
    """How the store behaves. `latency`: seconds before the first byte of every response
    (concurrent requests wait side by side, as in a real store). `bandwidth`: bytes/s per
    response body, None = unlimited. `token_ttl`: None = open; else every request needs a URL
    from :meth:`FileServer.sign`, valid that many seconds, and gets 403 without one. `truncate`:
    paths under the root (``"a/b.tif"``) whose stored object is only the file's first half, as a
    corrupt upload: HEAD, Content-Length and ranges all agree on the short size."""

    latency: float = 0.0
    bandwidth: float | None = None
    faults: Faults = field(default_factory=Faults)
    token_ttl: float | None = None
    truncate: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise FileServerError(f"ServeOptions.latency = {self.latency}: must be >= 0")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise FileServerError(f"ServeOptions.bandwidth = {self.bandwidth}: must be > 0")
        if self.token_ttl is not None and self.token_ttl <= 0:
            raise FileServerError(f"ServeOptions.token_ttl = {self.token_ttl}: must be > 0")
        object.__setattr__(self, "truncate", frozenset(p.strip("/") for p in self.truncate))


@dataclass(frozen=True)
class Request:
    """One request as the server answered it, logged just before its last byte is sent (so a
    client that has read its response finds it in the log)."""

    method: str
    path: str  # the URL path, percent-decoded, without the query
    range: str | None  # the Range header as sent
    status: int
    bytes_sent: int  # body bytes written; short on a reset or when the client left
    started: float  # time.monotonic() at arrival
    seconds: float  # from arrival to the last byte (or the drop)
    fault: FaultKind | None


class RequestLog:
    """The requests a server answered, in the order they were logged; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Request] = []

    def append(self, record: Request) -> None:
        with self._lock:
            self._items.append(record)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.snapshot())


@dataclass(frozen=True)
class Counters:
    """Totals over a server's log (so `log.clear()` resets them too)."""

    requests: int
    bytes_sent: int
    faults: Mapping[str, int]  # injected, by kind: error, reset, slow
    forbidden: int  # 403
    not_found: int  # 404
    partial: int  # 206
    tokens: int = 0  # tokens the token API handed out


@dataclass(frozen=True)
class _Slice:
    path: Path
    start: int
    length: int


class _Reply(Response):
    """A response that sends itself like a store: first-byte latency, a paced body, faults,
    and one log record whatever happens."""

    def __init__(
        self,
        server: FileServer,
        request: HttpRequest,
        started: float,
        status: int,
        headers: dict[str, str],
        body: bytes | _Slice = b"",
        fault: FaultKind | None = None,
    ) -> None:
        length = len(body) if isinstance(body, bytes) else body.length
        super().__init__(status_code=status, headers={**headers, "content-length": str(length)})
        self.server, self.started, self.content, self.fault = server, started, body, fault
        self.length = length
        self._sent, self._logged = 0, False
        self.method = request.method
        self.path = str(request.scope["path"])
        self.range = request.headers.get("range")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if self.server.options.latency:
                await asyncio.sleep(self.server.options.latency)
            body = self.length if self.method != "HEAD" else 0
            if body == 0:
                self._record()  # the headers complete the response
            start = {"status": self.status_code, "headers": self.raw_headers}
            await send({"type": "http.response.start", **start})
            if body:
                await self._send_body(send, scope.get(_TRANSPORT))
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._record()

    def _record(self) -> None:
        """Log the request once, before its last byte leaves: a client that has read its
        response always finds it in the log."""
        if not self._logged:
            self._logged = True
            self.server.log.append(
                Request(
                    self.method,
                    self.path,
                    self.range,
                    self.status_code,
                    self._sent,
                    self.started,
                    time.monotonic() - self.started,
                    self.fault,
                )
            )

    async def _send_body(self, send: Send, transport: Any) -> None:
        opts = self.server.options
        bandwidth = opts.bandwidth
        chunk = _CHUNK if bandwidth is None else max(1024, min(_CHUNK, int(bandwidth / 50)))
        cut = self.length // 2 if self.fault in ("reset", "slow") else None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with contextlib.ExitStack() as stack:
            content = self.content
            if isinstance(content, _Slice):
                f = stack.enter_context(open(content.path, "rb"))
                f.seek(content.start)
            for offset, size in _pieces(self.length, chunk, cut):
                if offset == cut:
                    if self.fault == "reset":
                        self._record()
                        await _drop(transport)
                        return
                    await asyncio.sleep(opts.faults.slow_seconds)
                if bandwidth is not None:  # each chunk leaves when the link would have sent it
                    await asyncio.sleep(max(0.0, t0 + (offset + size) / bandwidth - loop.time()))
                if transport is not None and transport.is_closing():
                    # The client hung up (GDAL does, once it has what it needs); let
                    # connection_lost run so that uvicorn does not call the body short.
                    await asyncio.sleep(0)
                    return
                data = (
                    f.read(size) if isinstance(content, _Slice) else content[offset : offset + size]
                )
                last = offset + size == self.length
                if last:
                    self._sent += len(data)
                    self._record()
                await send({"type": "http.response.body", "body": data, "more_body": not last})
                if not last:
                    self._sent += len(data)


def _pieces(length: int, chunk: int, cut: int | None) -> Iterator[tuple[int, int]]:
    """(offset, size) of the body's chunks; one starts exactly at `cut` when given."""
    offset = 0
    while offset < length:
        end = min(length, offset + chunk)
        if cut is not None and offset < cut < end:
            end = cut
        yield offset, end - offset
        offset = end


async def _drop(transport: Any) -> None:
    """Reset the connection (RST, as a store's dropped connection reaches the client: curl's
    "Connection reset by peer") once what was written so far has reached the socket."""
    if not isinstance(transport, asyncio.Transport):
        return  # uvicorn then closes the connection itself (and logs that the body was short)
    deadline = time.monotonic() + 1.0
    while transport.get_write_buffer_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST rather than FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let connection_lost run, so that uvicorn sees a client gone rather than an app error.
    await asyncio.sleep(0)


class _KeepTransport:
    """Puts the server's transport into the scope (uvicorn's h11 `send` is bound to the request
    cycle that holds it), so a reset can drop the very connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_TRANSPORT] = getattr(getattr(send, "__self__", None), "transport", None)
        await self.app(scope, receive, send)


_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


def byte_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The inclusive (first, last) byte a Range header asks of a `size`-byte object, None for
    the whole object (no header, another unit, a malformed or multiple range: ignored, as S3
    does), or "unsatisfiable" (416)."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    m = _RANGE.fullmatch(spec)
    if m is None or m.group(1) == m.group(2) == "":
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    a = int(first)
    b = int(last) if last else size - 1
    if last and b < a:
        return None
    if a >= size:
        return "unsatisfiable"
    return a, min(b, size - 1)


def _error(code: str, message: str, **extra: str) -> bytes:
    more = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>{more}</Error>"
    ).encode()


def _http_date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)


class FileServer:
    """A running file server (from :func:`serve_files`): `url`, `log`, `counters`, and the
    helpers `href` (the URL of a file under the root) and `sign` (a URL with a fresh token)."""

    def __init__(self, root: Path, options: ServeOptions, host: str) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileServerError(f"{root}: no such directory to serve")
        self.root = root.resolve()
        self.options = options
        self.log = RequestLog()
        self._secret = secrets.token_bytes(32)
        self._seen: Counter[tuple[str, str, str | None]] = Counter()
        self._lock = threading.Lock()
        self._sock = _bind(host)
        port = self._sock.getsockname()[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        app = Starlette(
            routes=[
                Route(TOKEN_API + "/{container}", self._token_api, methods=["GET"]),
                Route("/{key:path}", self._answer, methods=["GET", "HEAD"]),
            ]
        )
        config = uvicorn.Config(
            _KeepTransport(app),
            http="h11",  # _KeepTransport and resets rely on the h11 request cycle
            lifespan="off",
            log_config=None,  # leave the process's logging alone
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"cen-files-{port}", daemon=True)

    # -- the public helpers ------------------------------------------------------------------

    def href(self, path: str | Path) -> str:
        """The URL of `path` (relative to the root, or absolute under it); unsigned."""
        p = Path(path)
        full = (p if p.is_absolute() else self.root / p).resolve()
        if not full.is_relative_to(self.root):
            raise FileServerError(f"{path}: not under the served root {self.root}")
        return f"{self.url}/{quote(full.relative_to(self.root).as_posix())}"

    def sign(self, href: str) -> str:
        """`href` with a fresh ``token`` and ``exp`` (valid `token_ttl` seconds) when it points
        at this server and tokens are required; any other href unchanged."""
        ttl = self.options.token_ttl
        parts = urlsplit(href)
        if ttl is None or f"{parts.scheme}://{parts.netloc}" != self.url:
            return href
        exp = f"{time.time() + ttl:.3f}"
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("token", "exp", "sr")
        ]
        query += [("token", self._token(unquote(parts.path), exp)), ("exp", exp)]
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))

    def container_token(self, container: str) -> tuple[str, float]:
        """A query string that reads every file under ``<root>/<container>/`` for `token_ttl`
        seconds, and its expiry (epoch seconds): what the token API hands out."""
        ttl = self.options.token_ttl
        if ttl is None:
            raise FileServerError("this store needs no token (ServeOptions.token_ttl is None)")
        expiry = time.time() + ttl
        exp = f"{expiry:.3f}"
        token = self._token(f"c:{container}", exp)
        return urlencode([("token", token), ("exp", exp), ("sr", "c")]), float(exp)

    @property
    def counters(self) -> Counters:
        records = self.log.snapshot()
        faults = Counter(r.fault for r in records if r.fault is not None)
        return Counters(
            requests=len(records),
            bytes_sent=sum(r.bytes_sent for r in records),
            faults={k: faults[k] for k in FAULT_KINDS},
            forbidden=sum(r.status == 403 for r in records),
            not_found=sum(r.status == 404 for r in records),
            partial=sum(r.status == 206 for r in records),
            tokens=sum(r.path.startswith(TOKEN_API + "/") and r.status == 200 for r in records),
        )

    # -- answering -----------------------------------------------------------------------------

    def _token(self, path: str, exp: str) -> str:
        return hmac.new(self._secret, f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()

    async def _answer(self, request: HttpRequest) -> Response:
        started = time.monotonic()
        path = str(request.scope["path"])

        def reply(
            status: int,
            headers: dict[str, str],
            body: bytes | _Slice = b"",
            fault: FaultKind | None = None,
        ) -> _Reply:
            return _Reply(self, request, started, status, headers, body, fault)

        def error(status: int, code: str, message: str, **extra: str) -> _Reply:
            headers = {"content-type": "application/xml", "x-ms-error-code": code}
            return reply(status, headers, _error(code, message, **extra))

        query = request.query_params
        denied = self._check_token(path, query.get("token"), query.get("exp"), query.get("sr"))
        if denied is not None:
            return error(
                403, "AuthenticationFailed", _AUTH_MESSAGE, AuthenticationErrorDetail=denied
            )
        fault = self._draw(request.method, path, request.headers.get("range"))
        if fault == "error":
            busy = error(503, "ServerBusy", "The server is busy.")
            busy.headers["retry-after"] = "0"
            busy.fault = "error"
            return busy
        key = path.lstrip("/")
        target = self._resolve(key)
        if target is None:
            return error(404, "BlobNotFound", "The specified blob does not exist.")
        st = target.stat()
        size = st.st_size // 2 if key in self.options.truncate else st.st_size
        headers = {
            "accept-ranges": "bytes",
            "etag": f'"{st.st_mtime_ns:x}-{size:x}"',
            "last-modified": _http_date(st.st_mtime),
            "content-type": mimetypes.guess_type(key)[0] or "application/octet-stream",
        }
        wanted = byte_range(request.headers.get("range"), size)
        if wanted == "unsatisfiable":
            r = error(
                416,
                "InvalidRange",
                "The range specified is invalid for the current size of the resource.",
            )
            r.headers["content-range"] = f"bytes */{size}"
            return r
        body_fault = fault if request.method == "GET" else None
        if wanted is None:
            return reply(200, headers, _Slice(target, 0, size), body_fault)
        a, b = wanted
        headers["content-range"] = f"bytes {a}-{b}/{size}"
        return reply(206, headers, _Slice(target, a, b - a + 1), body_fault)

    async def _token_api(self, request: HttpRequest) -> Response:
        """``GET TOKEN_API/<container>``: a container token, as the Planetary Computer's SAS
        API answers it (``token`` to append to an href after ``?``, ``msft:expiry``)."""
        started = time.monotonic()
        container = str(request.path_params["container"])
        if self.options.token_ttl is None or self._container_dir(container) is None:
            why = (
                "this store needs no token"
                if self.options.token_ttl is None
                else f"no container {container!r}"
            )
            body = json.dumps({"message": why}).encode()
            return _Reply(self, request, started, 404, {"content-type": "application/json"}, body)
        token, expiry = self.container_token(container)
        when = dt.datetime.fromtimestamp(expiry, dt.UTC).isoformat(timespec="milliseconds")
        body = json.dumps({"msft:expiry": when.replace("+00:00", "Z"), "token": token}).encode()
        return _Reply(self, request, started, 200, {"content-type": "application/json"}, body)

    def _container_dir(self, container: str) -> Path | None:
        if not container or container in (".", "..") or "/" in container or "\\" in container:
            return None
        target = self.root / container
        return target if target.is_dir() and target.resolve().is_relative_to(self.root) else None

    def _check_token(
        self, path: str, token: str | None, exp: str | None, scope: str | None = None
    ) -> str | None:
        """Why a request is refused (the 403's AuthenticationErrorDetail), or None. ``sr=c``
        marks a container token (from the token API); otherwise the token is for one path."""
        if self.options.token_ttl is None:
            return None
        if not token or not exp:
            return "No token in the URL; sign it first (FileServer.sign or the token API)."
        signed = f"c:{path.lstrip('/').split('/', 1)[0]}" if scope == "c" else path
        if not hmac.compare_digest(token, self._token(signed, exp)):
            return "Signature did not match."
        try:
            expiry = float(exp)
        except ValueError:
            return "Signature did not match."
        now = time.time()
        if now > expiry:
            return (
                "Signature not valid in the specified time frame: "
                f"Expiry [{_http_date(expiry)}] - Current [{_http_date(now)}]"
            )
        return None

    def _draw(self, method: str, path: str, range_header: str | None) -> FaultKind | None:
        f = self.options.faults
        if not (f.error_rate or f.reset_rate or f.slow_rate):
            return None
        with self._lock:
            n = self._seen[(method, path, range_header)]
            self._seen[(method, path, range_header)] = n + 1
        digest = hashlib.blake2b(
            f"{f.seed}\0{method}\0{path}\0{range_header}\0{n}".encode(), digest_size=24
        ).digest()
        u = [int.from_bytes(digest[i : i + 8], "big") / 2**64 for i in (0, 8, 16)]
        if u[0] < f.error_rate:
            return "error"
        if u[1] < f.reset_rate:
            return "reset"
        if u[2] < f.slow_rate:
            return "slow"
        return None

    def _resolve(self, key: str) -> Path | None:
        """The file a key names, or None: missing, a directory, or anywhere outside the root
        (``..`` segments, however encoded, and symlinks leading out are refused)."""
        parts = key.split("/")
        if not key or "\\" in key or "\x00" in key or any(p in ("", ".", "..") for p in parts):
            return None
        try:
            target = self.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target

    # -- running -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def _start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            self._thread.join(0.01)
        if not self._server.started:
            self._stop()
            raise FileServerError(f"the file server for {self.root} did not start at {self.url}")

    def _stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)


_AUTH_MESSAGE = (
    "Server failed to authenticate the request. Make sure the value of Authorization header is "
    "formed correctly including the signature."
)


def _bind(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
    except OSError as e:
        sock.close()
        raise FileServerError(f"cannot listen on {host} ({e}); serve on 127.0.0.1") from e
    sock.listen(256)
    return sock


@contextlib.contextmanager
def serve_files(
    root: Path, options: ServeOptions = ServeOptions(), host: str = "127.0.0.1"
) -> Iterator[FileServer]:
    """Serve the files under `root` on a free port while the block runs; always stops."""
    server = FileServer(root, options, host)
    server._start()
    try:
        yield server
    finally:
        server._stop()


def _local_path(href: str) -> Path | None:
    if href.startswith("file://"):
        parts = urlsplit(href)
        return Path(unquote(parts.path)) if parts.netloc in ("", "localhost") else None
    return Path(href) if href.startswith("/") else None


def rehref(item: Json, base_url: str, root: Path, sign: Callable[[str], str] | None = None) -> Json:
    """A copy of a STAC item whose asset hrefs naming files under `root` (``file://`` URIs or
    absolute paths, as :func:`cenlib.stac.server.absolutize` leaves them) become
    ``base_url/<path under root>``, passed through `sign` when given; other hrefs unchanged.

    Fits ``serve(paths, transform=functools.partial(rehref, base_url=..., root=...))``."""
    base = base_url.rstrip("/")
    top = Path(root).resolve()
    out = dict(item)
    out["assets"] = {}
    for name, asset in item.get("assets", {}).items():
        a = dict(asset)
        local = _local_path(str(a.get("href", "")))
        if local is not None:
            full = local.resolve()
            if full.is_relative_to(top):
                url = f"{base}/{quote(full.relative_to(top).as_posix())}"
                a["href"] = sign(url) if sign is not None else url
        out["assets"][name] = a
    return out
