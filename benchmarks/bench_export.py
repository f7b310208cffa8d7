"""Export of a 10,000-patch labels-plus-images run: bounded memory, and throughput.

The benchmark writes a store in the run layout (blue, green, red reflectance and land cover;
maps and images from a `make demo` run when there is one, flipped and rotated at random, else
random pools) for 1,000 and 10,000 patches on the ChatEarthNet grid, runs analyze, prompt,
caption (the `rules` captioner) and verify on a 2-worker LocalCluster, then times the export
three times: ChatEarthNet's layout alone (PNGs + caption files) at the default PNG level (6)
and at ``export.png_compression: 1``, and every format. It samples the
largest worker RSS while the export runs (peak worker memory must not grow with the number of
patches: 10,000 against 1,000) and compares the PNG-only export's patches/s with a plain
single-process loop that reads each patch and writes its PNGs, in the same run.
Set CEN_BENCH_PATCHES (comma-separated sizes) to run other sizes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).parent))

from cenlib.analysis import analyze_store
from cenlib.captions import run_captions
from cenlib.config import parse_config
from cenlib.export import run_export
from cenlib.export.images import GROUPS, label_png, measure_stretch, png, to_8bit
from cenlib.grid import Grid
from cenlib.ingest import array, open_group
from cenlib.ingest.store import ShardData, StoreSpec, create_or_open, write_shard
from cenlib.prompts import run_prompts
from cenlib.verify import run_verify

SIZES = [int(s) for s in os.environ.get("CEN_BENCH_PATCHES", "1000,10000").split(",")]
SHARD = 16
BANDS = ("blue", "green", "red")


def _pools() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(reflectance (n, 3, 256, 256) int16, land cover (n, 256, 256) uint8) to draw from."""
    import zarr

    demo = Path("runs/demo/dataset.zarr")
    if demo.is_dir():
        g = zarr.open_group(str(demo), mode="r")
        ok = np.flatnonzero(np.asarray(g["status"][:]) == "ok")
        bands = [str(b) for b in np.asarray(g["band"][:])]
        if len(ok) and all(b in bands for b in BANDS):
            pick = [bands.index(b) for b in BANDS]
            refl = np.stack([np.asarray(g["reflectance"][int(i)])[pick] for i in ok[:32]])
            return refl, np.stack([np.asarray(g["land_cover"][int(i)]) for i in ok[:32]])
    rng = np.random.default_rng(0)
    refl = rng.integers(0, 4000, (8, 3, 256, 256)).astype(np.int16)
    return refl, rng.integers(1, 12, (8, 256, 256), dtype=np.uint8)


def write_store(url: str, n: int, pool: Executor | None = None) -> None:
    """A labels-plus-images store of ``n`` patches at ``url``, shard by shard (on ``pool``'s
    threads when given; each shard draws from its own seed, so the store is the same)."""
    grid = Grid()  # ChatEarthNet tiling, zoom 13, 256 px
    spec = StoreSpec(url, n, SHARD, BANDS, 256, f"bench-export-{n}")
    create_or_open(spec, {"title": "labels-plus-images benchmark store", "sources": {}})
    refl_pool, lc_pool = _pools()

    def shard(i: int) -> None:
        rng = np.random.default_rng((0, i))
        a, b = spec.shard_range(i)
        pick = rng.integers(0, len(lc_pool), b - a)
        k = int(rng.integers(0, 4))
        lc = np.ascontiguousarray(np.rot90(lc_pool[pick], k, axes=(1, 2)))
        refl = np.ascontiguousarray(np.rot90(refl_pool[pick], k, axes=(2, 3)))
        ids = []
        for j in range(a, b):
            t = j // 4
            ids.append(f"{4000 + t % 100}_{2800 + t // 100}_patch{(j % 4) // 2}{j % 2}")
        keys = [grid.key(p) for p in ids]
        fields = {
            "patch_id": np.array(ids, dtype=object),
            "grid": np.array(["chatearthnet"] * (b - a), dtype=object),
            "crs": np.array(["EPSG:3857"] * (b - a), dtype=object),
            "status": np.array(["ok"] * (b - a), dtype=object),
            "s2_items": np.array([f"S2B_bench_{j // 64}" for j in range(a, b)], dtype=object),
            "wc_items": np.array(["ESA_WorldCover_bench"] * (b - a), dtype=object),
            "transform": np.array([list(k.geobox.transform)[:6] for k in keys]),
            "datetime": np.full(b - a, np.datetime64("2021-07-14T10:20:00", "ns")),
        }
        write_shard(url, i, ShardData(a, refl, lc, np.zeros_like(lc), fields))

    list((pool.map if pool else map)(shard, range(spec.n_shards)))


class WorkerPeak:
    """Samples the largest RSS of any worker process (children of this one)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for p in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.peak = max(self.peak, p.memory_info().rss)
            time.sleep(0.1)

    def __enter__(self) -> WorkerPeak:
        self._t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._t.join()


def png_loop(url: str, out: Path, n: int, start: int = 0) -> float:
    """Seconds of a plain loop over patches ``start .. start + n``: read a patch, write its RGB
    and label PNGs, one process."""
    g = open_group(url)
    refl_a, lc_a = array(g, "reflectance"), array(g, "land_cover")
    stretch = measure_stretch(np.stack([np.asarray(refl_a[i]) for i in range(8)]), BANDS, (2, 98))
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i in range(start, start + n):
        (out / f"{i}.png").write_bytes(
            png(to_8bit(np.asarray(refl_a[i]), BANDS, GROUPS["rgb"], stretch))
        )
        (out / f"{i}_label.png").write_bytes(label_png(np.asarray(lc_a[i])))
    return time.perf_counter() - t


def png_loops(url: str, out: Path, n: int) -> tuple[float, float]:
    """Patches/s of :func:`png_loop` in one process, then in two processes at once (each on
    its own ``n`` patches): what two cores of this machine give a CPU-bound loop."""
    one = n / png_loop(url, out, n)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(png_loop, [url] * 2, [out] * 2, [8] * 2))  # start the interpreters
        two = 2 * n / max(pool.map(png_loop, [url] * 2, [out] * 2, [n] * 2, [0, n]))
    return one, two


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="cen-bench-export-"))
    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, memory_limit="3GiB", dashboard_address=":0"
        ) as lc,
        Client(lc) as client,
    ):
        for n in SIZES:
            run = work / f"run{n}"
            url = str(run / "dataset.zarr")
            t = time.perf_counter()
            write_store(url, n)
            cfg = parse_config({"output": str(run), "caption": {"endpoints": [{"kind": "rules"}]}})
            analyze_store(url, client, run)
            run_prompts(cfg, client)
            run_captions(cfg.caption, run, client)
            run_verify(cfg, client)
            print(
                f"{n} patches: store, analysis, prompts, captions, verdicts in "
                f"{time.perf_counter() - t:.0f} s"
            )
            for formats, level in ((["chatearthnet"], 6), (["chatearthnet"], 1), (None, 6)):
                exp: dict[str, Any] = {"formats": formats} if formats else {}
                exp["png_compression"] = level
                cfg = parse_config({"output": str(run), "export": exp})
                with WorkerPeak() as peak:
                    t0 = time.perf_counter()
                    s = run_export(cfg, client)
                    dt = time.perf_counter() - t0
                name = "PNGs + captions" if formats else "every format"
                name += "" if level == 6 else f", png_compression {level}"
                rows.append((n, name, s.exported / dt, peak.peak / 2**20, s.files, s.bytes / 2**20))
                print(
                    f"  export ({name}): {s.exported} patches in {dt:.1f} s = "
                    f"{s.exported / dt:.0f} patches/s, {s.files} files, {s.bytes / 2**20:.0f} MiB; "
                    f"peak worker RSS {peak.peak / 2**20:.0f} MiB"
                )
            loop, loops = png_loops(url, work / "loop", min(n // 2, 500))
            png_rate = next(r[2] for r in rows if r[0] == n and r[1] == "PNGs + captions")
            print(
                f"  plain PNG loop: {loop:.0f} patches/s in one process, {loops:.0f} in two at "
                f"once (x{loops / loop:.2f}); export (PNGs + captions) on 2 workers "
                f"x{png_rate / loop:.2f} the one loop, x{png_rate / loops:.2f} the two"
            )
            shutil.rmtree(work / "loop", ignore_errors=True)
    if len(SIZES) >= 2:
        lo, hi = SIZES[0], SIZES[-1]
        for name in ("PNGs + captions", "every format"):
            a = next(r[3] for r in rows if r[0] == lo and r[1] == name)
            b = next(r[3] for r in rows if r[0] == hi and r[1] == name)
            print(f"peak worker RSS, {name}: {hi} patches / {lo} patches = x{b / a:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
