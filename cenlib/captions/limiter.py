"""Rate limits that hold for a whole Dask cluster: requests and tokens per window, Retry-After.

An endpoint's limits (:class:`Limits`: at most ``requests`` sends and ``tokens`` tokens in any
``window`` seconds, 60 for RPM/TPM) are kept by one :class:`TokenBucket` per cluster: a Dask
Actor on one worker, which every task of every worker process asks before it sends. The bucket
hands out *reservations*: it books the next free send time and answers with how long the caller
must wait (the caller sleeps asyncio-wise; nothing blocks in the actor). A ``Retry-After`` from
the server is reported with ``penalize``: the endpoint's next free time moves past it for every
sender, including reservations already handed out (they are booked again after the pause).

    limiter = ClusterRateLimiter.start(client, {"openai": Limits.per_minute(500, 200_000)})
    futures = client.map(caption_batch, batches, limiter=limiter)  # the handle travels along

    # inside caption_batch, on a worker, in asyncio:
    async with limiter.slot("openai", n_tokens):
        response = await aclient.chat.completions.create(...)
    # on a 429: await limiter.penalize("openai", retry_after_seconds(err.response.headers) or 1)

:class:`LocalRateLimiter` has the same interface for one process (tests, a laptop, threads or
asyncio tasks): the same bucket, called directly under a lock.

The guarantee: a sliding window, not an average
-----------------------------------------------
Providers count requests in a sliding window, so "R per minute on average" is not enough: no
``window`` seconds may ever contain more than R sends. A classic token bucket with capacity B > 1
refills at R per window yet lets B + R - 1 sends into one window (a full bucket emptied, then the
refill); it is not used. Each limit is a *lane* with two rules, both on booked send times:

1. Pacing (a GCRA / virtual-clock bucket of capacity ``burst``, 1 by default): a send of cost c
   (1 for requests, its tokens for tokens) moves the lane's next free time by ``c * W' / L``
   where ``W' = window + margin``. With ``burst=1`` consecutive sends are at least ``W'/L``
   apart (L requests per lane), so L + 1 sends span at least ``L * W'/L = W'``; this spreads the
   sends evenly, which is also what keeps every window nearly full under load (>= ``L * W/W'``).
2. A ledger of the booked (time, cost) in the last ``W'`` seconds: a send is booked at the first
   time t at which the costs booked in ``(t - W', t]`` plus its own fit in L. This is the hard
   guarantee, whatever ``burst`` is (with ``burst > 1`` the lane lets bursts through and the
   ledger then holds the window; the price is a burstier, less even stream), and it is what
   makes a token limit exact (pacing alone lets a window exceed T by the tokens of one send).

Booked times are not arrival times: a send reaches the server after the reply to the caller, its
sleep and the HTTP request. If those delays vary by at most ``margin`` between sends, then any
L + 1 arrivals span at least ``W' - margin = window``, so no server window holds more than L.
The default margin is ``window / 60`` (1 s for a minute; 1.6 % of throughput). A cold client's
first request counts in that spread (lazy imports and a new connection took about 0.1 s on
loopback here; add TLS and distance for a real provider): warm clients up, or widen the margin
for short windows. Callers that come back late for their slot (more than ``margin / 2`` after
it, e.g. a blocked event loop) do not send on a stale booking: :meth:`TokenBucket.confirm`
books them again.

Retry-After
-----------
``penalize(endpoint, s)`` sets the endpoint's pause to ``now + s`` (never shortening one) and
books again, in their order and after the pause, every reservation not yet confirmed. Callers
that waited (wait > 0) confirm with the actor before sending (:meth:`RateLimiter.slot` does),
so only sends already on the wire when the 429 arrived escape the pause. ``acquire`` is the
fire-and-forget form (one call, no confirmation); its reservations are not moved by a penalty.

Getting the limiter inside a task
---------------------------------
Pass the :class:`ClusterRateLimiter` as an argument to ``client.submit`` / ``client.map`` (or
the bare actor handle, ``limiter.actor``, and wrap it in the task: ``ClusterRateLimiter(actor)``):
it pickles to the actor handle, which Dask binds to the worker on arrival. Keep the object
returned by :meth:`ClusterRateLimiter.start` alive on the client: it holds the actor's future,
and the actor is deleted when that future is released.
Alternatively start it with ``name=...`` (the future is then also published as a dataset on the
scheduler) and call ``ClusterRateLimiter.lookup(name)`` in the task: it uses
``distributed.get_client()`` to fetch the actor. Actor calls go straight to the worker holding
the actor (one round trip each: ``slot`` makes one, two when it has to wait); a task's own
event loop talks to them through a worker thread (``asyncio.to_thread``), so it works the same
from ``asyncio.run`` inside a task and from the worker's loop. If the worker holding the actor
dies, the limiter is gone (calls raise): start a new one.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

ON_TIME = 1e-6
"""A reservation this close (seconds) to now goes now (a float rounding allowance)."""

STALE_WINDOWS = 10
"""Unconfirmed reservations more than this many windows overdue are forgotten (caller gone)."""

_EPS = 1e-9


@dataclass(frozen=True)
class Limits:
    """An endpoint's limits: at most ``requests`` sends and ``tokens`` tokens in any ``window``.

    ``None`` means unlimited (an endpoint without limits can still be paused by Retry-After).
    ``margin`` (default ``window / 60``) widens the window the bucket books against, to absorb
    the varying delay between a booked time and the request's arrival at the server. ``burst``
    is the pacing bucket's capacity; keep 1 for an even stream (the window guarantee holds for
    any value: see the module documentation).
    """

    requests: int | None = None
    tokens: int | None = None
    window: float = 60.0
    margin: float | None = None
    burst: int = 1

    def __post_init__(self) -> None:
        for name in ("requests", "tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} per window must be >= 1 or None, got {value}")
        if not self.window > 0:
            raise ValueError(f"window must be > 0 seconds, got {self.window}")
        if self.margin is not None and not self.margin >= 0:
            raise ValueError(f"margin must be >= 0 seconds, got {self.margin}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}")

    @classmethod
    def per_minute(
        cls, rpm: int | None = None, tpm: int | None = None, *, margin: float | None = None
    ) -> Limits:
        """Requests and tokens per minute, as providers state them."""
        return cls(requests=rpm, tokens=tpm, window=60.0, margin=margin)

    @property
    def margin_s(self) -> float:
        return self.window / 60.0 if self.margin is None else self.margin

    @property
    def booked_window(self) -> float:
        """The window the bucket books against: ``window + margin``."""
        return self.window + self.margin_s


class _Lane:
    """One limit (requests or tokens): pacing plus a ledger of booked (time, cost, ticket)."""

    def __init__(self, limit: int, window: float, burst: int) -> None:
        self.limit = float(limit)
        self.window = window
        self.unit = window / limit
        self.tolerance = (burst - 1) * self.unit
        self.next_free = -math.inf
        self.last = -math.inf
        self.ledger: deque[tuple[float, float, int]] = deque()
        self.used = 0.0

    def prune(self, now: float) -> None:
        """Forget bookings that can no longer share a window with a booking at or after now."""
        while self.ledger and self.ledger[0][0] + self.window <= now:
            self.used -= self.ledger.popleft()[1]

    def earliest(self, t: float, cost: float) -> float:
        """The first time >= t at which a send of ``cost`` keeps both rules."""
        t = max(t, self.last, self.next_free - self.tolerance)
        excess = self.used + cost - self.limit
        for booked, c, _ in self.ledger:  # oldest first: they leave the window first
            if excess <= _EPS:
                break
            if booked + self.window > t:  # still inside (t - window, t]: wait for it to leave
                t = booked + self.window
            excess -= c
        return t

    def commit(self, t: float, cost: float, ticket: int) -> None:
        self.ledger.append((t, cost, ticket))
        self.used += cost
        self.last = t
        self.next_free = max(self.next_free, t) + cost * self.unit

    def remove(self, tickets: set[int]) -> None:
        """Drop unsent bookings; pacing restarts from the last booking that remains."""
        self.ledger = deque(e for e in self.ledger if e[2] not in tickets)
        self.used = sum(e[1] for e in self.ledger)
        if self.ledger:
            t, c, _ = self.ledger[-1]
            self.last, self.next_free = t, t + c * self.unit
        else:
            self.last = self.next_free = -math.inf


class _Schedule:
    """The bookings of one endpoint."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        w, burst = limits.booked_window, limits.burst
        self.requests = _Lane(limits.requests, w, burst) if limits.requests else None
        self.tokens = _Lane(limits.tokens, w, burst) if limits.tokens else None
        self.paused_until = -math.inf
        self.tickets: dict[int, tuple[float, int]] = {}
        """Unconfirmed reservations: ticket -> (booked time, tokens)."""
        self.counts = dict.fromkeys(
            ("booked", "immediate", "late_rebooked", "penalty_rebooked", "penalties"), 0
        )

    def lanes(self, n_tokens: int) -> list[tuple[_Lane, float]]:
        out: list[tuple[_Lane, float]] = []
        if self.requests is not None:
            out.append((self.requests, 1.0))
        if self.tokens is not None:
            out.append((self.tokens, float(n_tokens)))
        return out

    def check(self, n_tokens: int) -> None:
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        if self.limits.tokens is not None and n_tokens > self.limits.tokens:
            raise ValueError(
                f"a request of {n_tokens} tokens can never fit a limit of "
                f"{self.limits.tokens} tokens per {self.limits.window:g} s"
            )

    def prune(self, now: float) -> None:
        for lane in (self.requests, self.tokens):
            if lane is not None:
                lane.prune(now)

    def book(self, t0: float, n_tokens: int, ticket: int) -> float:
        lanes = self.lanes(n_tokens)
        t = max(t0, self.paused_until)
        while True:  # the first time every lane accepts; each lane's answer is monotone in t
            t_next = t
            for lane, cost in lanes:
                t_next = max(t_next, lane.earliest(t_next, cost))
            if t_next <= t:
                break
            t = t_next
        for lane, cost in lanes:
            lane.commit(t, cost, ticket)
        self.counts["booked"] += 1
        return t

    def unbook(self, tickets: set[int]) -> None:
        for lane in (self.requests, self.tokens):
            if lane is not None:
                lane.remove(tickets)

    def forget_stale(self, now: float) -> None:
        horizon = STALE_WINDOWS * self.limits.booked_window
        for ticket in [k for k, (b, _) in self.tickets.items() if b + horizon < now]:
            del self.tickets[ticket]


class TokenBucket:
    """The booking state of every endpoint; a Dask Actor (or a plain object in one process).

    Every method is thread-safe. Times are this process's ``clock`` (monotonic); callers only
    ever see durations (seconds to wait), so clocks of other processes do not matter.
    """

    def __init__(
        self, limits: Mapping[str, Limits], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tickets = itertools.count(1)
        self._calls = 0
        self._schedules = {name: _Schedule(lim) for name, lim in limits.items()}

    def configure(self, endpoint: str, limits: Limits) -> None:
        """Add an endpoint, or replace its limits (its bookings and pause are forgotten)."""
        with self._lock:
            self._schedules[endpoint] = _Schedule(limits)

    def endpoints(self) -> dict[str, Limits]:
        with self._lock:
            return {name: s.limits for name, s in self._schedules.items()}

    def _schedule(self, endpoint: str) -> _Schedule:
        try:
            return self._schedules[endpoint]
        except KeyError:
            known = ", ".join(sorted(self._schedules)) or "none"
            raise KeyError(
                f"endpoint {endpoint!r} has no limits configured (known: {known})"
            ) from None

    def _now(self, sched: _Schedule) -> float:
        now = self._clock()
        sched.prune(now)
        self._calls += 1
        if self._calls % 256 == 0:
            sched.forget_stale(now)
        return now

    def reserve(self, endpoint: str, n_tokens: int = 0) -> tuple[float, int]:
        """Book a send: ``(wait, ticket)``. With ``wait == 0`` send now (ticket 0). Otherwise
        sleep ``wait`` seconds, then :meth:`confirm` the ticket before sending."""
        with self._lock:
            sched = self._schedule(endpoint)
            sched.check(n_tokens)
            now = self._now(sched)
            ticket = next(self._tickets)
            booked = sched.book(now, n_tokens, ticket)
            if booked - now <= ON_TIME:
                sched.counts["immediate"] += 1
                return 0.0, 0
            sched.tickets[ticket] = (booked, n_tokens)
            return booked - now, ticket

    def confirm(self, endpoint: str, ticket: int) -> float:
        """0 when the reservation may send now (it is then final); else seconds to wait before
        confirming again (a penalty moved it, or the caller came back too late and it was
        booked again)."""
        with self._lock:
            sched = self._schedule(endpoint)
            entry = sched.tickets.get(ticket)
            if entry is None:  # ticket 0, already confirmed, released or long forgotten
                return 0.0
            now = self._now(sched)
            booked, n_tokens = entry
            if booked - now > ON_TIME:
                return booked - now
            if now - booked > sched.limits.margin_s / 2:  # stale: its slot has passed
                sched.unbook({ticket})
                booked = sched.book(now, n_tokens, ticket)
                sched.counts["late_rebooked"] += 1
                if booked - now > ON_TIME:
                    sched.tickets[ticket] = (booked, n_tokens)
                    return booked - now
            del sched.tickets[ticket]
            return 0.0

    def release(self, endpoint: str, ticket: int) -> None:
        """Give up an unconfirmed reservation (the caller was cancelled); it is not rebooked."""
        with self._lock:
            sched = self._schedule(endpoint)
            sched.tickets.pop(ticket, None)

    def acquire(self, endpoint: str, n_tokens: int = 0) -> float:
        """Book a send and return the seconds to wait before it; no confirmation (a later
        penalty does not move it: :meth:`reserve` and :meth:`confirm` are penalty-aware)."""
        with self._lock:
            sched = self._schedule(endpoint)
            sched.check(n_tokens)
            now = self._now(sched)
            booked = sched.book(now, n_tokens, 0)
            if booked - now <= ON_TIME:
                sched.counts["immediate"] += 1
                return 0.0
            return booked - now

    def penalize(self, endpoint: str, retry_after_s: float) -> float:
        """Pause the endpoint for everyone until ``retry_after_s`` from now; unconfirmed
        reservations are booked again after it, in order. A pause already in force that ends
        later is left as it is. Returns the seconds until the pause ends."""
        with self._lock:
            sched = self._schedule(endpoint)
            now = self._now(sched)
            sched.counts["penalties"] += 1
            if not now + retry_after_s > sched.paused_until:  # no longer pause (or NaN)
                return max(0.0, sched.paused_until - now)
            sched.paused_until = max(sched.paused_until, now + retry_after_s)
            pending = sorted(sched.tickets.items(), key=lambda kv: (kv[1][0], kv[0]))
            sched.unbook({ticket for ticket, _ in pending})
            for ticket, (booked, n_tokens) in pending:
                sched.tickets[ticket] = (sched.book(max(now, booked), n_tokens, ticket), n_tokens)
                sched.counts["penalty_rebooked"] += 1
            return sched.paused_until - now

    def stats(self, endpoint: str) -> dict[str, float]:
        """Counters (booked, immediate, late_rebooked, penalty_rebooked, penalties), the
        unconfirmed reservations, and seconds until the pause ends and the next free slot."""
        with self._lock:
            sched = self._schedule(endpoint)
            now = self._now(sched)
            lanes = [lane for lane in (sched.requests, sched.tokens) if lane is not None]
            next_free = max([sched.paused_until, *(lane.next_free for lane in lanes)])
            return {
                **{k: float(v) for k, v in sched.counts.items()},
                "outstanding": float(len(sched.tickets)),
                "paused_for": max(0.0, sched.paused_until - now),
                "next_free_in": max(0.0, next_free - now),
            }


class RateLimiter(abc.ABC):
    """The asyncio interface shared by :class:`LocalRateLimiter` and :class:`ClusterRateLimiter`
    (see :class:`TokenBucket` for what each call does)."""

    @abc.abstractmethod
    async def reserve(self, endpoint: str, n_tokens: int = 0) -> tuple[float, int]: ...

    @abc.abstractmethod
    async def confirm(self, endpoint: str, ticket: int) -> float: ...

    @abc.abstractmethod
    def release_nowait(self, endpoint: str, ticket: int) -> None:
        """Release a reservation without waiting (safe from a cancelled task)."""

    @abc.abstractmethod
    async def acquire(self, endpoint: str, n_tokens: int = 0) -> float: ...

    @abc.abstractmethod
    async def penalize(self, endpoint: str, retry_after_s: float) -> float: ...

    @abc.abstractmethod
    async def stats(self, endpoint: str) -> dict[str, float]: ...

    @contextlib.asynccontextmanager
    async def slot(self, endpoint: str, n_tokens: int = 0) -> AsyncIterator[float]:
        """Wait for a send slot of ``endpoint`` (``n_tokens``: the request's prompt plus its
        ``max_tokens``, as providers count them), then let the body send; yields the seconds
        waited. A penalty that arrives while waiting extends the wait."""
        start = time.monotonic()
        wait, ticket = await self.reserve(endpoint, n_tokens)
        try:
            while wait > 0:
                await asyncio.sleep(wait)
                wait = await self.confirm(endpoint, ticket)
        except BaseException:
            if ticket:
                self.release_nowait(endpoint, ticket)
            raise
        yield time.monotonic() - start


class LocalRateLimiter(RateLimiter):
    """The limiter for one process: a :class:`TokenBucket` called directly (thread-safe, so
    asyncio tasks in several threads' loops may share it)."""

    def __init__(
        self, limits: Mapping[str, Limits], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bucket = TokenBucket(limits, clock)

    async def reserve(self, endpoint: str, n_tokens: int = 0) -> tuple[float, int]:
        return self.bucket.reserve(endpoint, n_tokens)

    async def confirm(self, endpoint: str, ticket: int) -> float:
        return self.bucket.confirm(endpoint, ticket)

    def release_nowait(self, endpoint: str, ticket: int) -> None:
        self.bucket.release(endpoint, ticket)

    async def acquire(self, endpoint: str, n_tokens: int = 0) -> float:
        return self.bucket.acquire(endpoint, n_tokens)

    async def penalize(self, endpoint: str, retry_after_s: float) -> float:
        return self.bucket.penalize(endpoint, retry_after_s)

    async def stats(self, endpoint: str) -> dict[str, float]:
        return self.bucket.stats(endpoint)


class ClusterRateLimiter(RateLimiter):
    """The limiter of a Dask cluster: a handle to a :class:`TokenBucket` actor.

    Create it on the client with :meth:`start` and keep that object until the work is done.
    It pickles to the bare actor handle, so it can be passed to tasks (``client.submit(f,
    limiter)``); a copy in a task does not keep the actor alive.
    """

    def __init__(self, actor: Any, future: Any = None, name: str | None = None) -> None:
        self.actor = actor
        self._future = future
        self.name = name

    @classmethod
    def start(
        cls,
        client: Any,
        limits: Mapping[str, Limits],
        *,
        name: str | None = None,
        workers: Iterable[str] | None = None,
    ) -> ClusterRateLimiter:
        """Start the bucket actor on a worker of ``client`` (``workers``: where it may go).
        With ``name``, the actor's future is also published under that name (see
        :meth:`lookup`) until :meth:`close`."""
        future = client.submit(
            TokenBucket,
            dict(limits),
            actor=True,
            pure=False,
            workers=list(workers) if workers is not None else None,
        )
        actor = future.result()
        if name is not None:
            client.publish_dataset(future, name=name, override=True)
        return cls(actor, future, name)

    @classmethod
    def lookup(cls, name: str, client: Any = None) -> ClusterRateLimiter:
        """The limiter started with ``name``, from inside a task (``distributed.get_client()``)
        or from any client of the cluster."""
        if client is None:
            from distributed import get_client

            client = get_client()
        return cls(client.get_dataset(name).result())

    def close(self) -> None:
        """Release the actor (on the client that started it; other handles then fail)."""
        future, self._future = self._future, None
        if future is not None:
            if self.name is not None:
                with contextlib.suppress(Exception):
                    future.client.unpublish_dataset(self.name)
            future.release()

    def __enter__(self) -> ClusterRateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (ClusterRateLimiter, (self.actor,))

    def call(self, method: str, *args: Any) -> Any:
        """Call a :class:`TokenBucket` method and block for its result (not from the thread
        of a running event loop of a worker or client)."""
        return getattr(self.actor, method)(*args).result()

    async def _call(self, method: str, *args: Any) -> Any:
        # An ActorFuture belongs to the worker's (or client's) IO loop, not to the caller's
        # loop: wait for it in a thread. The worker context travels with to_thread.
        return await asyncio.to_thread(self.call, method, *args)

    async def reserve(self, endpoint: str, n_tokens: int = 0) -> tuple[float, int]:
        wait, ticket = await self._call("reserve", endpoint, n_tokens)
        return float(wait), int(ticket)

    async def confirm(self, endpoint: str, ticket: int) -> float:
        return float(await self._call("confirm", endpoint, ticket))

    def release_nowait(self, endpoint: str, ticket: int) -> None:
        # The call is queued on the IO loop; its result is not awaited.
        with contextlib.suppress(Exception):
            self.actor.release(endpoint, ticket)

    async def acquire(self, endpoint: str, n_tokens: int = 0) -> float:
        return float(await self._call("acquire", endpoint, n_tokens))

    async def penalize(self, endpoint: str, retry_after_s: float) -> float:
        return float(await self._call("penalize", endpoint, retry_after_s))

    async def stats(self, endpoint: str) -> dict[str, float]:
        result: dict[str, float] = await self._call("stats", endpoint)
        return result


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a server asks to wait: ``retry-after-ms`` (OpenAI), else ``Retry-After`` in
    seconds or as an HTTP date (``now``: wall time, default ``time.time()``). None when absent
    or unreadable. Header names in any case."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        with contextlib.suppress(ValueError):
            value = float(ms) / 1000.0
            if math.isfinite(value):
                return max(0.0, value)
    raw = lower.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = time.time() if now is None else now
        return max(0.0, when.timestamp() - current)
    return max(0.0, value) if math.isfinite(value) else None


__all__ = [
    "ClusterRateLimiter",
    "Limits",
    "LocalRateLimiter",
    "RateLimiter",
    "TokenBucket",
    "retry_after_seconds",
]
