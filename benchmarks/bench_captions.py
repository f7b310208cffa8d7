"""Caption pool throughput against an instant local server, and achieved versus configured rate.

The server is the tests' OpenAI-compatible fake in its own process (so it does not share the
client's GIL), answering at once. Side by side, in this process:

- (a) the baseline: bare ``openai.AsyncOpenAI`` calls, ``asyncio.gather`` under a semaphore of
  the same concurrency, nothing recorded;
- (b) the pool (routing, breaker, request keys, accounting), same concurrency;
- (c) the pool plus what a caption task adds: every answer appended and fsync'd to its shard;
- (d) the whole stage on a LocalCluster of 2 worker processes (plan, tasks, merge, outputs).

Then the rate: the stage with R requests per W seconds over 2 workers; the achieved rate is
measured from the server's arrival log. Prints figures and ratios, asserts nothing.
Targets: (b), (c) and (d) at >= 500 requests/s on a 2-core machine; achieved / configured >= 0.95.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from distributed import Client, LocalCluster

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("CEN_TEST_API_KEY", "sk-bench")

from caption_support import caption_config, endpoint, write_prompts  # noqa: E402
from openai_server import fetch_log  # noqa: E402

from cenlib.captions import run_captions  # noqa: E402
from cenlib.captions.pool import Pool, Request  # noqa: E402
from cenlib.captions.responses import ShardWriter  # noqa: E402
from cenlib.captions.worker import GroupCommit  # noqa: E402
from cenlib.prompts import read_prompts  # noqa: E402

N = 3000
CONCURRENCY = 64


def start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "openai_server.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


async def raw(base_url: str, requests: list[Request]) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(r: Request) -> None:
        async with sem:
            c = await client.chat.completions.create(
                model="fake-model", messages=r.messages, temperature=0.7, max_tokens=400
            )
            assert c.choices[0].message.content

    await asyncio.gather(*(one(r) for r in requests[:50]))  # warm up
    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    dt = time.perf_counter() - t0
    await client.close()
    return dt


async def pooled(base_url: str, requests: list[Request], shard_dir: Path | None) -> float:
    cfg = caption_config(endpoint(base_url, max_concurrency=CONCURRENCY))
    pool = Pool(cfg)
    await asyncio.gather(*(pool.run(r) for r in requests[:50]))
    writer = GroupCommit(ShardWriter(shard_dir, "bench")) if shard_dir is not None else None
    t0 = time.perf_counter()

    async def one(r: Request) -> None:
        out = await pool.run(r)
        assert out.response is not None
        if writer is not None:
            writer.add(out.response)

    await asyncio.gather(*(one(r) for r in requests))
    dt = time.perf_counter() - t0
    if writer is not None:
        await writer.close()
        writer.writer.close()
    await pool.aclose()
    return dt


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-captions-"))
    write_prompts(tmp / "p", N)
    requests = [
        Request((p.patch_id,), p.messages, p.seed, 0)
        for p in read_prompts(tmp / "p" / "prompts.jsonl")
    ]
    proc, url = start_server()
    try:
        print(f"{N} requests, concurrency {CONCURRENCY}, server in its own process at {url}")
        a = min(asyncio.run(raw(url, requests)) for _ in range(2))
        b = min(asyncio.run(pooled(url, requests, None)) for _ in range(2))
        c = asyncio.run(pooled(url, requests, tmp / "shards"))
        print(f"(a) bare AsyncOpenAI        {N / a:7.0f} req/s")
        print(f"(b) pool                    {N / b:7.0f} req/s  ratio to (a) x{b / a:.2f}")
        print(f"(c) pool + group commit     {N / c:7.0f} req/s  ratio to (a) x{c / a:.2f}")
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            cfg = caption_config(endpoint(url, max_concurrency=CONCURRENCY), batch_size=500)
            t0 = time.perf_counter()
            rep = run_captions(cfg, tmp / "p", client)
            d = time.perf_counter() - t0
            assert rep["captioned"] == N, rep
            print(f"(d) stage, 2 workers        {N / d:7.0f} req/s  ratio to (a) x{d / a:.2f}")
    finally:
        proc.terminate()
        proc.wait()

    window, r, n = 10.0, 100, 400
    proc, url = start_server()
    try:
        write_prompts(tmp / "rate", n, seed=1)
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            ep = endpoint(url, max_concurrency=16, requests_per_minute=int(r * 60 / window))
            cfg = caption_config(ep, rate_window_s=window, batch_size=50)
            rep = run_captions(cfg, tmp / "rate", client)
            assert rep["captioned"] == n, rep
        times = sorted(q.t for q in fetch_log(url))
        achieved = (len(times) - 1) / (times[-1] - times[0]) * window
        full = [
            sum(1 for t in times if t0 <= t < t0 + window)
            for t0 in times
            if t0 + window <= times[-1]
        ]
        print(
            f"rate: configured {r} per {window:g} s over 2 workers; achieved {achieved:.1f} per "
            f"{window:g} s from first to last request: ratio {achieved / r:.3f}; full windows: "
            f"min {min(full)}, median {sorted(full)[len(full) // 2]}, max {max(full)} "
            f"(min ratio {min(full) / r:.2f})"
        )
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
