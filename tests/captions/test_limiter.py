"""The cluster-wide rate limiter: the bucket's booking rules on a fake clock, then the real thing.

The end-to-end runs send real HTTP requests to the fake OpenAI server (``openai_server``) from
two Dask worker processes (and, for the in-process limiter, from two threads with their own
event loops): the server must see at most R requests in any window and nothing while a
Retry-After pause is in force. The achieved rate (>= 0.95 R per window while there is work) is
printed here and measured in ``benchmarks/bench_captions.py``; asserting it on a real clock
would fail on a loaded machine (the fake-clock tests above assert the pacing exactly). Windows
are a few seconds instead of 60 to keep the file short; the rules do not depend on the window's
length.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import cloudpickle
import openai
import pytest
from distributed import Client
from hypothesis import given, settings
from hypothesis import strategies as st
from openai_server import FakeOpenAI, max_in_window

from cenlib.captions.limiter import (
    ClusterRateLimiter,
    Limits,
    LocalRateLimiter,
    RateLimiter,
    TokenBucket,
    retry_after_seconds,
)

# The senders below run on the workers, which cannot import this file: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EP = "fake"
KEY = "sk-test"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def max_cost_in_window(sends: Sequence[tuple[float, float]], window: float) -> float:
    """The largest total cost of sends in any half-open window (t - window, t]."""
    ordered = sorted(sends)
    best = total = 0.0
    start = 0
    for t, cost in ordered:
        total += cost
        while t - ordered[start][0] >= window:
            total -= ordered[start][1]
            start += 1
        best = max(best, total)
    return best


def min_in_window(times: Sequence[float], window: float, start: float, end: float) -> int:
    """The fewest times in any window (s, s + window] lying within [start, end]; the count only
    drops right after a time, so the windows starting at each time (and at start) suffice."""
    ts = sorted(times)
    starts = [start, *(t for t in ts if start <= t <= end - window)]
    return min(sum(1 for t in ts if s < t <= s + window) for s in starts)


# -- the bucket on a fake clock --------------------------------------------------------------


@dataclass
class Sim:
    sends: list[tuple[float, float]]
    """(time, tokens) of each send."""
    pauses: list[tuple[float, float]]
    """(start, end) of each pause as the bucket reported it."""


def simulate(
    bucket: TokenBucket,
    clock: FakeClock,
    arrivals: Sequence[tuple[float, int]],
    penalties: Sequence[tuple[float, float]] = (),
    lateness: Callable[[], float] = lambda: 0.0,
) -> Sim:
    """Callers arrive at (time, tokens), reserve, sleep, come back ``lateness()`` late to
    confirm, and send when told 0, as ``RateLimiter.slot`` does; penalties at (time, seconds)."""
    events: list[tuple[float, int, str, tuple[Any, ...]]] = []
    seq = itertools.count()
    for t, tokens in arrivals:
        heapq.heappush(events, (t, next(seq), "reserve", (tokens,)))
    for t, s in penalties:
        heapq.heappush(events, (t, next(seq), "penalty", (s,)))
    sim = Sim([], [])
    while events:
        t, _, kind, data = heapq.heappop(events)
        clock.now = t
        if kind == "penalty":
            sim.pauses.append((t, t + bucket.penalize(EP, data[0])))
            continue
        if kind == "reserve":
            (tokens,) = data
            wait, ticket = bucket.reserve(EP, tokens)
        else:
            ticket, tokens = data
            wait = bucket.confirm(EP, ticket)
        if wait == 0:
            sim.sends.append((t, tokens))
        else:
            heapq.heappush(events, (t + wait + lateness(), next(seq), "confirm", (ticket, tokens)))
    return sim


@settings(max_examples=60, deadline=None)
@given(
    requests=st.integers(1, 30),
    tokens=st.one_of(st.none(), st.integers(50, 400)),
    window=st.floats(0.5, 10.0),
    burst=st.integers(1, 6),
    n=st.integers(1, 150),
    n_penalties=st.integers(0, 3),
    late=st.sampled_from(["none", "small", "some very late"]),
    seed=st.integers(0, 2**16),
)
def test_no_window_ever_holds_more_than_the_limit(
    requests: int,
    tokens: int | None,
    window: float,
    burst: int,
    n: int,
    n_penalties: int,
    late: str,
    seed: int,
) -> None:
    rng = random.Random(seed)
    limits = Limits(requests=requests, tokens=tokens, window=window, burst=burst)
    margin = limits.margin_s
    clock = FakeClock()
    bucket = TokenBucket({EP: limits}, clock)
    span = 3 * window
    arrivals = sorted((rng.uniform(0, span), rng.randint(0, 50)) for _ in range(n))
    penalties = [(rng.uniform(0, span), rng.uniform(0, window)) for _ in range(n_penalties)]

    def lateness() -> float:
        if late == "none":
            return 0.0
        if late == "some very late" and rng.random() < 0.2:
            return rng.uniform(0, 2 * window)  # a blocked caller: booked again, not sent late
        return rng.uniform(0, margin / 2)

    sim = simulate(bucket, clock, arrivals, penalties, lateness)
    times = [t for t, _ in sim.sends]
    assert len(sim.sends) == n  # everyone sent once
    # Sends come at most margin/2 after their booking, so even a window of window + margin/2
    # (a bit less: float rounding at the boundary) holds no more than the limit.
    assert max_in_window(times, window + margin / 2 - 1e-6) <= requests
    if tokens is not None:
        assert max_cost_in_window(sim.sends, window + margin / 2 - 1e-6) <= tokens
    for start, end in sim.pauses:
        assert not [t for t in times if start < t < end - 1e-6], (start, end)
    assert bucket.stats(EP)["outstanding"] == 0


def test_saturated_demand_fills_every_window_evenly() -> None:
    """Pacing: with work queued, each window holds R * window / (window + margin) sends."""
    clock = FakeClock()
    limits = Limits(requests=60, window=6.0)
    bucket = TokenBucket({EP: limits}, clock)
    sim = simulate(bucket, clock, [(0.0, 0)] * 400)
    times = [t for t, _ in sim.sends]
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {round(limits.booked_window / 60, 9)}  # capacity 1: one every W'/R
    assert max_in_window(times, 6.1 - 1e-6) == 60
    lowest = min_in_window(times, 6.0, 0.0, times[-1])
    assert lowest == math.floor(60 * 6.0 / 6.1) == 59
    assert lowest >= 0.95 * 60


def test_a_burst_goes_at_once_and_the_ledger_still_holds_the_window() -> None:
    """With burst > 1, pacing alone would let burst + R - 1 into a window: the ledger stops it."""
    clock = FakeClock()
    bucket = TokenBucket({EP: Limits(requests=20, window=6.0, burst=10)}, clock)
    sim = simulate(bucket, clock, [(0.0, 0)] * 100)
    times = [t for t, _ in sim.sends]
    assert times[:10] == [0.0] * 10
    assert max_in_window(times, 6.1 - 1e-6) == 20
    assert times[20] == pytest.approx(6.1)  # the 21st waits for the first to leave the window


def test_tokens_per_window_are_exact() -> None:
    clock = FakeClock()
    bucket = TokenBucket({EP: Limits(tokens=100, window=6.0)}, clock)
    sim = simulate(bucket, clock, [(0.0, 30)] * 30)
    assert max_cost_in_window(sim.sends, 6.1 - 1e-6) <= 100
    # 3 sends of 30 per window: pacing alone (cost 30 * 6.1/100 each) would let a 4th in.
    assert max_in_window([t for t, _ in sim.sends], 6.0) == 3
    with pytest.raises(ValueError, match="can never fit"):
        bucket.reserve(EP, 101)
    with pytest.raises(ValueError, match=">= 0"):
        bucket.acquire(EP, -1)


def test_requests_and_tokens_together() -> None:
    clock = FakeClock()
    bucket = TokenBucket({EP: Limits(requests=10, tokens=1000, window=1.0)}, clock)
    arrivals = [(0.0, 50 if i % 3 else 400) for i in range(60)]
    sim = simulate(bucket, clock, arrivals)
    assert max_in_window([t for t, _ in sim.sends], 1.0) <= 10
    assert max_cost_in_window(sim.sends, 1.0) <= 1000


def test_penalty_moves_reservations_already_handed_out() -> None:
    clock = FakeClock()
    bucket = TokenBucket({EP: Limits(requests=10, window=1.0)}, clock)
    u = bucket.endpoints()[EP].booked_window / 10
    booked = [bucket.reserve(EP) for _ in range(5)]
    assert booked[0] == (0.0, 0)
    assert [w for w, _ in booked[1:]] == pytest.approx([u, 2 * u, 3 * u, 4 * u])
    clock.now = 0.05
    assert bucket.penalize(EP, 2.0) == pytest.approx(2.0)
    assert bucket.stats(EP)["penalty_rebooked"] == 4
    clock.now = u  # the first waiter comes back: its slot is now after the pause
    assert bucket.confirm(EP, booked[1][1]) == pytest.approx(2.05 - u)
    assert bucket.acquire(EP) == pytest.approx(2.05 + 4 * u - u)  # behind the four, paced
    assert bucket.penalize(EP, 0.5) == pytest.approx(2.05 - u)  # a shorter one does not shorten
    assert bucket.penalize(EP, float("nan")) == pytest.approx(2.05 - u)
    clock.now = 2.05
    assert bucket.confirm(EP, booked[1][1]) == 0
    assert bucket.confirm(EP, booked[1][1]) == 0  # already final
    assert bucket.confirm(EP, booked[2][1]) == pytest.approx(u)


def test_a_late_caller_is_booked_again() -> None:
    clock = FakeClock()
    bucket = TokenBucket({EP: Limits(requests=10, window=1.0)}, clock)
    u = bucket.endpoints()[EP].booked_window / 10
    bucket.reserve(EP)
    wait, ticket = bucket.reserve(EP)
    bucket.reserve(EP)
    clock.now = wait + 0.05  # more than margin / 2 after its slot: booked after the third
    again = bucket.confirm(EP, ticket)
    assert again == pytest.approx(3 * u - clock.now)
    assert bucket.stats(EP)["late_rebooked"] == 1
    clock.now += again
    assert bucket.confirm(EP, ticket) == 0


def test_unknown_endpoint_and_bad_limits() -> None:
    bucket = TokenBucket({EP: Limits(requests=1)})
    with pytest.raises(KeyError, match="no limits configured"):
        bucket.reserve("other")
    bucket.configure("other", Limits())  # no limits: never waits, but can be paused
    assert bucket.reserve("other") == (0.0, 0)
    assert bucket.penalize("other", 30) == pytest.approx(30, abs=0.1)
    assert bucket.acquire("other") == pytest.approx(30, abs=0.1)
    for bad in ({"requests": 0}, {"window": 0}, {"margin": -1}, {"burst": 0}, {"tokens": 0}):
        with pytest.raises(ValueError):
            Limits(**bad)
    assert Limits.per_minute(500, 90_000).booked_window == 61.0


def test_retry_after_headers() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "0.25"}) == 0.25
    assert retry_after_seconds({"Retry-After": "-4"}) == 0.0
    date = format_datetime(datetime.fromtimestamp(1_000_100, UTC), usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=1_000_000) == pytest.approx(100)
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({"retry-after-ms": "x"}) is None
    assert retry_after_seconds({}) is None


def test_a_cancelled_waiter_gives_its_reservation_back() -> None:
    limiter = LocalRateLimiter({EP: Limits(requests=1, window=30.0)})

    async def main() -> None:
        async with limiter.slot(EP) as waited:
            assert waited < 0.1

        async def second() -> None:
            async with limiter.slot(EP):
                raise AssertionError("not before 30 s")

        task = asyncio.create_task(second())
        await asyncio.sleep(0.1)
        assert (await limiter.stats(EP))["outstanding"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await limiter.stats(EP))["outstanding"] == 0

    asyncio.run(main())


# -- end to end: real HTTP requests from several senders --------------------------------------


def send_until(
    limiter: RateLimiter | None,
    name: str | None,
    base_url: str,
    sender: str,
    deadline: float,
    concurrency: int,
) -> dict[str, int]:
    """A caption-like task: ``concurrency`` asyncio senders through ``limiter.slot`` until the
    wall-clock ``deadline``; a 429 penalizes the endpoint by its Retry-After. Without a
    limiter, it is looked up by ``name`` (``distributed.get_client()`` inside the task)."""
    if limiter is None:
        assert name is not None
        limiter = ClusterRateLimiter.lookup(name)
    return asyncio.run(_send_until(limiter, base_url, sender, deadline, concurrency))


async def _send_until(
    limiter: RateLimiter, base_url: str, sender: str, deadline: float, concurrency: int
) -> dict[str, int]:
    counts = {"sent": 0, "penalized": 0}
    numbers = itertools.count()
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key=KEY, max_retries=0, timeout=10.0
    ) as client:
        # Warm the client first: its first request pays lazy imports and a connection (about
        # 0.1 s), more than the short windows' margin allows between booking and arrival.
        # GET /v1/models is not a chat request: the server does not count it.
        _ = client.chat.completions
        await client.models.list()

        async def one() -> None:
            while time.time() < deadline:
                async with limiter.slot(EP, 20):
                    if time.time() >= deadline:
                        return
                    content = f"{sender}:{next(numbers)}"
                    counts["sent"] += 1
                    try:
                        await client.chat.completions.create(
                            model="fake-model", messages=[{"role": "user", "content": content}]
                        )
                    except openai.RateLimitError as err:
                        counts["penalized"] += 1
                        wait = retry_after_seconds(err.response.headers)
                        await limiter.penalize(EP, 1.0 if wait is None else wait)

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return counts


def warm_up(base_url: str) -> None:
    """Import the SDK's lazy modules in this process before the clock starts."""

    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as client:
            _ = client.chat.completions
            await client.models.list()

    asyncio.run(main())


@dataclass
class Run:
    R: int
    window: float
    times: dict[str, list[float]]
    """Server arrival times (monotonic) per sender."""
    t429: float
    pause: float
    faults: dict[str, int]


def check_run(run: Run, label: str) -> None:
    """At most R per window anywhere; silence in the pause; both senders active before the
    penalty and both resuming after it. The fewest per window while steady is printed only."""
    every = sorted(t for ts in run.times.values() for t in ts)
    first, R, W = every[0], run.R, run.window
    most = max_in_window(every, W)
    lowest = min_in_window(every, W, first + 0.5, run.t429 - 0.05)
    steady = [t for t in every if first + 0.5 <= t <= run.t429 - 0.05]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) * W
    in_pause = [t - run.t429 for t in every if run.t429 < t < run.t429 + run.pause]
    print(
        f"\n{label}: R={R} per {W:g} s; most in a window {most}, fewest while steady {lowest}, "
        f"mean {rate:.2f} per window; arrivals in the {run.pause:g} s pause after the 429: "
        f"{[round(x, 3) for x in in_pause]}; requests {len(every)}; faults {run.faults}"
    )
    assert most <= R
    assert run.faults.get("rate_limit", 0) == 0  # the server's own sliding-log limiter agrees
    # Only sends already on their way when the 429 came back may land after it.
    assert all(x < 0.25 for x in in_pause), in_pause
    for sender, ts in run.times.items():
        assert [t for t in ts if run.t429 - 1.0 < t < run.t429], f"{sender} idle before 429"
        resumed = [t for t in ts if t >= run.t429 + run.pause]
        assert resumed, f"{sender} never resumed"
        assert resumed[0] < run.t429 + run.pause + 0.5, f"{sender} slow to resume"


def observe(fake: FakeOpenAI, R: int, window: float, pause: float) -> Run:
    times: dict[str, list[float]] = {}
    t429 = None
    for r in fake.requests:
        assert r.body is not None
        sender = r.body["messages"][0]["content"].split(":")[0]
        times.setdefault(sender, []).append(r.t)
        if r.fault == "429":
            t429 = r.t
    assert t429 is not None
    return Run(R, window, times, t429, pause, dict(fake.faults_applied()))


def fake_server(R: int, window: float, n_429: int, pause: float) -> FakeOpenAI:
    faults = ["ok"] * n_429 + ["429"]
    return FakeOpenAI(faults=faults, retry_after=pause, rate_limit=R, rate_window=window)


@pytest.mark.slow
def test_cluster_limit_holds_for_two_worker_processes(dask_client: Client) -> None:
    R, W, pause = 120, 6.0, 2.0  # 20 requests/s; the 429 comes after about 10 s
    workers = sorted(dask_client.scheduler_info()["workers"])
    assert len(workers) == 2
    limits = {EP: Limits(requests=R, window=W)}
    with (
        fake_server(R, W, 200, pause) as fake,
        ClusterRateLimiter.start(dask_client, limits, name="lim") as lim,
    ):
        dask_client.gather(
            [dask_client.submit(warm_up, fake.base_url, workers=[w], pure=False) for w in workers]
        )
        deadline = time.time() + 10.2 + pause + 3.0
        futures = [
            dask_client.submit(
                send_until, lim, None, fake.base_url, "a", deadline, 8,
                workers=[workers[0]], pure=False,
            ),
            dask_client.submit(
                send_until, None, "lim", fake.base_url, "b", deadline, 8,
                workers=[workers[1]], pure=False,
            ),
        ]  # fmt: skip
        results = dask_client.gather(futures)
        stats = lim.call("stats", EP)
        run = observe(fake, R, W, pause)
    print(f"senders {results}; bucket {stats}")
    check_run(run, "cluster, 2 worker processes")
    assert sum(r["penalized"] for r in results) == 1
    assert stats["penalty_rebooked"] >= 8  # reservations handed out were moved by the pause
    assert stats["outstanding"] == 0


@pytest.mark.slow
def test_local_limiter_holds_for_two_threads() -> None:
    R, W, pause = 60, 3.0, 1.5  # 20 requests/s; the 429 comes after about 5.5 s
    limiter = LocalRateLimiter({EP: Limits(requests=R, window=W)})
    with fake_server(R, W, 110, pause) as fake:
        warm_up(fake.base_url)
        deadline = time.time() + 5.6 + pause + 2.0
        results: list[dict[str, int]] = []

        def run(sender: str) -> None:
            results.append(send_until(limiter, None, fake.base_url, sender, deadline, 8))

        threads = [threading.Thread(target=run, args=(s,)) for s in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        observed = observe(fake, R, W, pause)
    stats = limiter.bucket.stats(EP)
    print(f"senders {results}; bucket {stats}")
    check_run(observed, "one process, 2 threads")
    assert sum(r["penalized"] for r in results) == 1
    assert stats["penalty_rebooked"] >= 8
