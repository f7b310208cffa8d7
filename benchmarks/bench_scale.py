"""Analysis + prompts at ChatEarthNet's size: 163,488 patches on a 2-worker LocalCluster.

The benchmark writes a labels-only store (the run store's layout, land cover only) of 163,488
patches: the demo world's ingested class maps, flipped and rotated at random, shard by shard.
Then it times the analyze stage (counts, no layout; and with the layout descriptors) and the
prompt stage (chatearthnet-3.5), samples the workers' memory while they run, and compares with
the 60 s budget and with the reference scripts' per-patch route extrapolated from a sample.
Set CEN_BENCH_PATCHES to run smaller.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).parent))

from cenlib.analysis import analyze_store
from cenlib.config import parse_config
from cenlib.ingest.store import ShardData, StoreSpec, create_or_open, write_shard
from cenlib.prompts.stage import run_prompts

N = int(os.environ.get("CEN_BENCH_PATCHES", "163488"))
SHARD = 16  # the default ingest.shard_patches
BUDGET_S = 60.0


def _pool() -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Class maps of the demo world (from a `make demo` run), or painted ones if absent."""
    import zarr

    demo = Path("runs/demo/dataset.zarr")
    if demo.is_dir():
        g = zarr.open_group(str(demo), mode="r")
        ok = np.asarray(g["status"][:]) == "ok"
        maps = np.asarray(g["land_cover"][:])[ok]
        if len(maps):
            return maps
    rng = np.random.default_rng(0)
    return rng.integers(0, 12, (16, 256, 256), dtype=np.uint8)


def write_store(url: str, n: int) -> None:
    spec = StoreSpec(url, n, SHARD, ("red",), 256, f"bench-{n}")
    create_or_open(spec, {"title": "labels-only benchmark store"})
    pool = _pool()
    rng = np.random.default_rng(0)
    for i in range(spec.n_shards):
        a, b = spec.shard_range(i)
        pick = pool[rng.integers(0, len(pool), b - a)]
        k = int(rng.integers(0, 4))
        maps = np.ascontiguousarray(np.rot90(pick, k, axes=(1, 2)))
        if rng.random() < 0.5:
            maps = np.ascontiguousarray(maps[:, :, ::-1])
        ids = np.array([f"{j}_{j}_patch00" for j in range(a, b)], dtype=object)
        fields = {
            "patch_id": ids,
            "status": np.array(["ok"] * (b - a), dtype=object),
        }
        write_shard(
            url,
            i,
            ShardData(
                a,
                np.full((b - a, 1, 256, 256), -32768, np.int16),
                maps,
                np.zeros((b - a, 256, 256), np.uint8),
                fields,
            ),
        )


class Peak:
    """Samples the summed RSS of the client process and all its children."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            procs = [me, *me.children(recursive=True)]
            rss = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):  # a worker may just have exited
                    rss += p.memory_info().rss
            self.peak = max(self.peak, rss)
            time.sleep(0.2)

    def __enter__(self) -> Peak:
        self._t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._t.join()


def reference_rate(maps: np.ndarray[Any, np.dtype[np.uint8]]) -> float:
    """Patches/s of the reference scripts' route: Counter + np.unique per region."""
    t = time.perf_counter()
    for m in maps:
        Counter(m.ravel().tolist())
        for sl in (m[:128, :128], m[:128, 128:], m[128:, :128], m[128:, 128:], m[64:192, 64:192]):
            np.unique(sl, return_counts=True)
    return len(maps) / (time.perf_counter() - t)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cen-bench-scale-"))
    url = str(work / "dataset.zarr")
    t = time.perf_counter()
    write_store(url, N)
    print(f"labels-only store: {N} patches written in {time.perf_counter() - t:.1f} s")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as lc,
        Client(lc) as client,
    ):
        totals = {}
        for layout in (False, True):
            cfg = parse_config(
                {
                    "output": str(work / "run"),
                    "ingest": {"store": url},
                    "analysis": {"layout": layout},
                }
            )
            with Peak() as peak:
                t0 = time.perf_counter()
                a = analyze_store(url, client, cfg.output, cfg.analysis.batch, 4 if layout else 0)
                t1 = time.perf_counter()
                p = run_prompts(cfg, client, url)
                t2 = time.perf_counter()
            shutil.rmtree(cfg.output / "prompts", ignore_errors=True)
            total = totals[layout] = t2 - t0
            print(
                f"{N} patches, layout {'on' if layout else 'off'}: analyze {t1 - t0:.1f} s "
                f"({a['ok'] / (t1 - t0):.0f} patches/s), prompts {t2 - t1:.1f} s "
                f"({p['prompts']} chatearthnet-3.5 prompts), total {total:.1f} s = "
                f"x{total / BUDGET_S:.2f} of the {BUDGET_S:.0f} s budget; peak RSS of client + "
                f"workers {peak.peak / 2**30:.2f} GiB"
            )
    sample = _pool()[:64]
    ref = reference_rate(np.resize(sample, (min(256, N), 256, 256)))
    print(
        f"reference route: {ref:.0f} patches/s on one core -> {N / ref / 2:.0f} s on two cores "
        f"for analysis alone; ours (layout off) x{(N / ref / 2) / totals[False]:.1f} "
        "faster end to end"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
