"""A pool of endpoints that answers requests: routing, health, retries and failover.

For each request the pool picks an endpoint by weight among the healthy ones, waits for its
per-process concurrency slot and its cluster-wide rate slot, and sends. On a failure
(:class:`~cenlib.captions.backends.Fault`) it:

- pauses the endpoint for the ``Retry-After`` of a 429 (for every sender of the cluster through
  the limiter, and locally so the next attempt prefers another endpoint);
- counts server errors, timeouts, dropped connections and malformed or empty answers against
  the endpoint's circuit breaker: ``breaker_failures`` in a row open it for
  ``breaker_cooldown_s`` (doubling on each failed probe, at most 16 times), after which one
  probe request is let through (half-open); a success closes it;
- turns an endpoint off for the run on 401/403/404 or a missing key;
- tries another endpoint for a request one endpoint refused (400/413/422);
- retries after an exponential backoff with full jitter (``backoff_s * 2**(attempt-1)``, at
  most ``backoff_max_s``, at least the Retry-After), unless another healthy endpoint is free,
  which gets the retry at once.

After ``max_attempts`` sends the request becomes a dead letter (patch id, endpoint, the last
error, attempts). Requests the budget refuses are left for a later run (``skipped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cenlib.captions import costs
from cenlib.captions.backends import Backend, Fault, RequestFacts, make_backend
from cenlib.captions.budget import Budget
from cenlib.captions.limiter import RateLimiter
from cenlib.captions.responses import DeadLetter, Response, request_key
from cenlib.config import CaptionConfig, EndpointConfig

MAX_COOLDOWN_DOUBLINGS = 4


class _Reroute(Exception):
    """The chosen endpoint became unusable while the request waited for it."""


@dataclass(frozen=True)
class Request:
    """What to ask, for which patches (one; several for a batched 4v request).

    ``facts``: what the prompt states (its record's ``facts``: one patch's, or a list aligned
    with ``patch_ids``), for in-process captioners; never sent, and not in the request key.
    ``None`` for a prompts file written before records carried facts.
    """

    patch_ids: tuple[str, ...]
    messages: list[dict[str, Any]]
    seed: int
    tokens_in: int  # counted prompt tokens (rate limits and budget use them)
    facts: RequestFacts | None = None

    @property
    def patch_label(self) -> str:
        return ",".join(self.patch_ids)


@dataclass
class Breaker:
    """Closed (sending), open until ``open_until``, or half-open (one probe in flight)."""

    failures: int = 0
    open_until: float = 0.0
    trips: int = 0
    probing: bool = False
    off: str | None = None  # why the endpoint is off for the run
    paused_until: float = 0.0  # a 429's Retry-After, seen locally

    def usable(self, now: float) -> bool:
        if self.off is not None or now < self.open_until:
            return False
        return not (self.trips and self.failures and self.probing)


@dataclass
class EndpointStats:
    requests: int = 0
    answered: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    latency_s: list[float] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)


@dataclass
class Outcome:
    request: Request
    response: Response | None = None
    dead: DeadLetter | None = None
    skipped: str | None = None  # left for a later run (the budget)


class Pool:
    """Endpoints of one caption run, shared by the asyncio tasks of one Dask task."""

    def __init__(
        self,
        caption: CaptionConfig,
        *,
        limiter: RateLimiter | None = None,
        budget: Budget | None = None,
        seed: int = 0,
        clock: Any = time.monotonic,
        backends: Mapping[str, Backend] | None = None,
    ) -> None:
        self.caption = caption
        self.endpoints: dict[str, EndpointConfig] = {e.label: e for e in caption.endpoints}
        self.backends = dict(backends) if backends else {}
        self.limiter = limiter
        self.budget = budget
        self.rng = random.Random(seed)
        self.clock = clock
        self.breakers = {name: Breaker() for name in self.endpoints}
        self.stats = {name: EndpointStats() for name in self.endpoints}
        self.sems = {n: asyncio.Semaphore(e.max_concurrency) for n, e in self.endpoints.items()}
        self.params = caption.params

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            self.backends[name] = make_backend(self.endpoints[name])
        return self.backends[name]

    async def aclose(self) -> None:
        for b in self.backends.values():
            with contextlib.suppress(Exception):
                await b.aclose()

    def keys(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """The request key per model of the pool (failing over to another model is a new key)."""
        models = {e.model_name for e in self.endpoints.values()}
        return {m: request_key(m, messages, self.params) for m in sorted(models)}

    # ---- routing ----------------------------------------------------------------------------

    def choose(self, avoid: set[str], failed: str | None = None) -> tuple[str | None, float]:
        """An endpoint to send to now, or (None, seconds until one may be usable). ``failed``
        (the endpoint this request just failed on) is taken only if no other is ready."""
        now = self.clock()
        ready = [
            n
            for n, b in self.breakers.items()
            if n not in avoid and b.usable(now) and now >= b.paused_until
        ]
        if not ready:  # paused ones still beat waiting for an open circuit
            ready = [n for n, b in self.breakers.items() if n not in avoid and b.usable(now)]
        if failed in ready and len(ready) > 1:
            ready.remove(failed)
        if ready:
            weights = [self.endpoints[n].weight for n in ready]
            return self.rng.choices(ready, weights)[0], 0.0
        waits = [
            b.open_until - now
            for n, b in self.breakers.items()
            if n not in avoid and b.off is None and b.open_until > now
        ]
        return None, (min(waits) if waits else -1.0)  # -1: nothing will ever be usable

    def _success(self, name: str) -> None:
        b = self.breakers[name]
        b.failures, b.trips, b.probing = 0, 0, False

    def _failure(self, name: str, fault: Fault) -> None:
        b = self.breakers[name]
        now = self.clock()
        if fault.kind == "endpoint":
            b.off = str(fault)
            return
        if fault.kind == "rate_limit":
            b.paused_until = max(b.paused_until, now + (fault.retry_after or 1.0))
            return
        if fault.kind == "request":
            return
        b.failures += 1
        if b.probing or b.failures >= self.caption.breaker_failures:
            cooldown = self.caption.breaker_cooldown_s * 2 ** min(b.trips, MAX_COOLDOWN_DOUBLINGS)
            b.open_until = now + cooldown
            b.trips += 1
            b.probing = False

    @contextlib.asynccontextmanager
    async def _probe(self, name: str) -> AsyncIterator[None]:
        b = self.breakers[name]
        probe = b.trips > 0 and b.failures > 0
        if probe:
            b.probing = True
        try:
            yield
        finally:
            if probe:
                b.probing = False

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.caption.backoff_max_s, self.caption.backoff_s * 2 ** (attempt - 1))
        return max(self.rng.uniform(0, cap), retry_after or 0.0)

    # ---- one request ------------------------------------------------------------------------

    async def run(self, req: Request) -> Outcome:
        attempts = 0
        avoid: set[str] = set()  # endpoints that refused this request
        last_ep, last_error = "", "no endpoint could be tried"
        while attempts < self.caption.max_attempts:
            name, wait = self.choose(avoid, last_ep or None)
            if name is None:
                if wait < 0:
                    why = [f"{n} is off ({b.off})" for n, b in self.breakers.items() if b.off]
                    why += [f"{n} refused it" for n in sorted(avoid)]
                    last_error = "no endpoint can take this request: " + "; ".join(why)
                    break
                await asyncio.sleep(wait)
                continue
            ep = self.endpoints[name]
            reserved = 0.0
            if self.budget is not None:
                reserved = costs.worst_cost(ep, req.tokens_in, self.caption.max_tokens)
                if not await self.budget.reserve(reserved):
                    return Outcome(
                        req,
                        skipped=f"budget: the next request would exceed caption.max_cost on {name}",
                    )
            stats = self.stats[name]
            try:
                async with self.sems[name]:
                    # It may have failed for others while this request waited its turn.
                    if not self.breakers[name].usable(self.clock()):
                        raise _Reroute
                    attempts += 1
                    stats.requests += 1
                    backend = self.backend(name)
                    backend.warm()
                    async with self._probe(name):
                        if self.limiter is not None and (
                            ep.requests_per_minute or ep.tokens_per_minute
                        ):
                            slot = self.limiter.slot(name, req.tokens_in + self.caption.max_tokens)
                        else:
                            slot = contextlib.nullcontext(0.0)  # type: ignore[assignment]
                        async with slot:
                            answer = await backend.complete(
                                req.messages,
                                self.params,
                                seed=req.seed,
                                patch_id=req.patch_ids[0],
                                facts=req.facts,
                            )
            except _Reroute:
                if self.budget is not None:
                    await self.budget.settle(reserved, 0.0)
                continue
            except Fault as fault:
                if self.budget is not None:
                    await self.budget.settle(reserved, 0.0)
                stats.faults[fault.kind] += 1
                self._failure(name, fault)
                last_ep, last_error = name, str(fault)
                if fault.kind == "rate_limit" and self.limiter is not None:
                    await self.limiter.penalize(name, fault.retry_after or 1.0)
                if fault.kind == "request":
                    avoid.add(name)
                    continue
                if fault.kind == "endpoint":
                    continue
                if attempts >= self.caption.max_attempts:
                    break
                other, _ = self.choose(avoid | {name})
                if other is None:
                    await asyncio.sleep(self.backoff(attempts, fault.retry_after))
                continue
            except BaseException:
                if self.budget is not None:
                    await asyncio.shield(self.budget.settle(reserved, 0.0))
                raise
            self._success(name)
            cost = costs.cost(ep, answer.tokens_in, answer.tokens_out)
            if self.budget is not None:
                await self.budget.settle(reserved, cost or 0.0)
            stats.answered += 1
            stats.tokens_in += answer.tokens_in or 0
            stats.tokens_out += answer.tokens_out or 0
            stats.cost += cost or 0.0
            stats.latency_s.append(answer.latency_s)
            key = request_key(ep.model_name, req.messages, self.params)
            resp = Response(
                key=key,
                patch_id=req.patch_label,
                endpoint=name,
                model=ep.model_name,
                content=answer.content,
                tokens_in=answer.tokens_in,
                tokens_out=answer.tokens_out,
                latency_s=round(answer.latency_s, 4),
                cost=cost,
                attempts=attempts,
                finish_reason=answer.finish_reason,
            )
            return Outcome(req, response=resp)
        model = self.endpoints[last_ep or next(iter(self.endpoints))].model_name
        key = request_key(model, req.messages, self.params)
        letter = DeadLetter(
            key=key,
            patch_id=req.patch_label,
            endpoint=last_ep or "-",
            error=last_error,
            attempts=max(attempts, 1),
        )
        return Outcome(req, dead=letter)
