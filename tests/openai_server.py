"""A real local HTTP server speaking the OpenAI Chat Completions protocol, with fault injection.

Used by the caption pool's tests (and its benchmark) in place of a paid endpoint. Stdlib only, so
that it can also run in its own process (``python tests/openai_server.py --help``).

    with FakeOpenAI(faults=random_faults(0.2, seed=1), rate_limit=60) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-test")
        ...
        assert fake.max_in_window(60.0) <= 60
        assert max(fake.answered_per_hash().values()) == 1

Serves ``POST /v1/chat/completions``, ``GET /v1/models`` and, for a server in another process,
``GET /_fake/log`` (the request log as JSON; ``?bodies=1`` adds the request bodies).

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
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FAULTS = ("ok", "429", "500", "503", "timeout", "drop", "malformed", "empty_choices", "slow")
"""Fault kinds a schedule may return."""

SERVER_FAULTS = ("down", "rate_limit", "unauthorized", "bad_request", "error")
"""Reasons the server itself gives (recorded as the fault; never returned by a schedule)."""

DEFAULT_MODEL = "fake-model"

Responder = Callable[[dict[str, Any]], str]
FaultFn = Callable[[int, dict[str, Any]], str]
Faults = Sequence[str] | FaultFn | None


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


def max_in_window(times: Iterable[float], window: float = 60.0) -> int:
    """The most of ``times`` falling in any half-open interval (t - window, t]."""
    ts = sorted(times)
    best = start = 0
    for i, t in enumerate(ts):
        while t - ts[start] >= window:
            start += 1
        best = max(best, i - start + 1)
    return best


def _check_kinds(kinds: Iterable[str]) -> None:
    bad = sorted(set(kinds) - set(FAULTS))
    if bad:
        raise ValueError(f"unknown fault kinds {bad}; known: {', '.join(FAULTS)}")


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
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if urlsplit(self.path).path.rstrip("/") == "/v1/chat/completions":
            self.server.fake._chat(self, raw)
        else:
            self.send_error_json(404, "not found", "invalid_request_error")

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_raw(status, json.dumps(payload).encode(), headers)

    def send_raw(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
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
