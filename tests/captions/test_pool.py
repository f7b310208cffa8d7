"""The endpoint pool in one process: breaker, failover, refusals, dead letters, backoff."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from caption_support import caption_config, endpoint
from conftest import CANARY_KEY
from openai_server import FakeOpenAI

from cenlib.captions.backends import Fault
from cenlib.captions.limiter import LocalRateLimiter
from cenlib.captions.pool import Pool, Request
from cenlib.captions.stage import limits_of
from cenlib.config import EndpointConfig

MSGS = [{"role": "system", "content": "Describe."}, {"role": "user", "content": "A lake."}]


def _req(i: int = 0) -> Request:
    return Request((f"p{i}",), [*MSGS[:1], {"role": "user", "content": f"A lake, {i}."}], 0, 20)


async def _run_all(pool: Pool, n: int) -> list[Any]:
    try:
        return await asyncio.gather(*(pool.run(_req(i)) for i in range(n)))
    finally:
        await pool.aclose()


def test_dead_letter_after_max_attempts_names_endpoint_and_error() -> None:
    with FakeOpenAI(faults=["500"] * 10, api_key=CANARY_KEY) as fake:
        ep = endpoint(fake.base_url, name="only")
        pool = Pool(caption_config(ep, max_attempts=3, breaker_failures=10))
        (out,) = asyncio.run(_run_all(pool, 1))
        assert len(fake.requests) == 3
    assert out.response is None and out.dead is not None
    assert out.dead.attempts == 3 and out.dead.endpoint == "only"
    assert "server" in out.dead.error and "500" in out.dead.error
    assert out.dead.patch_id == "p0"


def test_breaker_opens_then_half_open_probe_closes_it() -> None:
    clock = [0.0]
    ep = endpoint("http://127.0.0.1:9/v1", name="x")
    pool = Pool(
        caption_config(ep, breaker_failures=3, breaker_cooldown_s=10), clock=lambda: clock[0]
    )
    for _ in range(3):
        assert pool.choose(set())[0] == "x"
        pool._failure("x", Fault("server", "x answered 500"))
    name, wait = pool.choose(set())
    assert name is None and wait == 10
    clock[0] = 10.0
    assert pool.choose(set())[0] == "x"  # half-open: a probe may go
    pool.breakers["x"].probing = True
    assert pool.choose(set())[0] is None  # only one probe at a time
    pool.breakers["x"].probing = False
    pool._failure("x", Fault("timeout", "x did not answer"))  # the probe failed
    assert pool.choose(set()) == (None, 20.0)  # cool-down doubled
    clock[0] = 30.0
    pool._success("x")
    assert pool.choose(set())[0] == "x" and pool.breakers["x"].failures == 0


def test_refused_request_tries_the_other_endpoint_and_bad_key_turns_one_off() -> None:
    with (
        FakeOpenAI(faults=lambda n, body: "ok", api_key="sk-other") as wrong_key,
        FakeOpenAI(api_key=CANARY_KEY) as good,
    ):
        eps = (
            endpoint(wrong_key.base_url, name="bad", weight=100.0),
            endpoint(good.base_url, name="good"),
        )
        pool = Pool(caption_config(*eps, max_attempts=2))
        outs = asyncio.run(_run_all(pool, 20))
        assert len(wrong_key.requests) <= 8  # off after its first 401s: only those in flight
    assert all(o.response is not None and o.response.endpoint == "good" for o in outs)
    assert pool.breakers["bad"].off and "401" in pool.breakers["bad"].off
    assert pool.stats["bad"].faults["endpoint"] >= 1


def test_retry_after_is_honoured_by_the_rate_limiter() -> None:
    with FakeOpenAI(faults=["429"], retry_after=0.8, api_key=CANARY_KEY) as fake:
        ep = endpoint(fake.base_url, requests_per_minute=6000)
        limiter = LocalRateLimiter(limits_of(caption_config(ep)))
        pool = Pool(caption_config(ep), limiter=limiter)
        t0 = time.monotonic()
        outs = asyncio.run(_run_all(pool, 1))
        log = fake.requests
    assert outs[0].response is not None and outs[0].response.attempts == 2
    assert log[1].t - log[0].t >= 0.75
    assert time.monotonic() - t0 >= 0.75


def test_weights_route_traffic() -> None:
    eps = (
        EndpointConfig(kind="rules", name="heavy", weight=3.0),
        EndpointConfig(kind="rules", name="light", weight=1.0),
    )
    pool = Pool(caption_config(*eps), seed=1)
    picks = [pool.choose(set())[0] for _ in range(4000)]
    share = picks.count("heavy") / len(picks)
    assert 0.72 < share < 0.78


def test_every_endpoint_off_gives_dead_letters_that_say_why() -> None:
    with FakeOpenAI(api_key="sk-other") as fake:
        pool = Pool(caption_config(endpoint(fake.base_url, name="only", max_concurrency=1)))
        outs = asyncio.run(_run_all(pool, 3))
        assert len(fake.requests) == 1  # the first 401 turns it off; nothing more is sent
    assert all(o.dead is not None for o in outs)
    assert all("only is off" in o.dead.error and "401" in o.dead.error for o in outs if o.dead)


def test_a_failed_request_is_retried_on_another_endpoint() -> None:
    """Failover is per request: after a failure, the retry goes elsewhere when another endpoint
    is ready, however the weights lean (here the breaker never opens to help)."""
    with (
        FakeOpenAI(faults=lambda n, body: "500", api_key=CANARY_KEY) as broken,
        FakeOpenAI(api_key=CANARY_KEY) as good,
    ):
        eps = (
            endpoint(broken.base_url, name="broken", weight=100.0),
            endpoint(good.base_url, name="good"),
        )
        pool = Pool(caption_config(*eps, max_attempts=2, breaker_failures=1000))
        outs = asyncio.run(_run_all(pool, 30))
    assert all(o.response is not None and o.response.endpoint == "good" for o in outs)
    assert all(o.response.attempts <= 2 for o in outs if o.response)
