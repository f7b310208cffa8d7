"""Ingest at cloud latency: the demo world's COGs served over HTTP by the loopback object-store
server (cenlib.stac.files) with 0, 20 and 50 ms before each response's first byte; the same
patches ingested with ingest.io_concurrency 1, 4 and 16 on 1 and 2 workers. Reports patches/s,
the speed-up of concurrency against one read at a time in the same run, and HTTP requests and
bytes per patch (from the server's log). Each run gets a fresh server (a new port), so no run
reads what GDAL cached in an earlier one.

The minimum the request counts are held against comes from the tile index: the windows ingest
reads (recorded from a pass over local files with the same tasks) touch a set of COG tiles;
a reader that fetched each such tile once per shard task, plus one header read per COG per
task, would make that many requests and send those tiles' bytes (TileByteCounts). GDAL's
process-wide cache can beat it (a tile shared by two tasks on one worker is fetched once).
odc-stac's `load` is in bench_ingest_odc.py, async-tiff in bench_ingest_async_tiff.py.
CEN_BENCH_LATENCIES (ms), CEN_BENCH_WORKERS and CEN_BENCH_IO (ingest.io_concurrency;
comma-separated) choose other runs; CEN_BENCH_PRESET=large reads the large world's full-size
COGs instead of the demo's (CEN_BENCH_PER_AREA=N: the first N patches of each area).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import rasterio
from distributed import Client, LocalCluster
from rasterio.errors import RasterBlockError
from rasterio.windows import Window

from cenlib.config import RunConfig, parse_config
from cenlib.grid import Grid
from cenlib.ingest.read import GDAL_ENV, Readers
from cenlib.ingest.stage import ingest_patch, ingest_patches, make_tasks, params_from
from cenlib.ingest.store import StoreSpec
from cenlib.stac.files import ServeOptions, serve_files
from cenlib.stac.search import SearchRequest, search
from cenlib.stac.server import serve_world
from cenlib.world.build import ensure_world

LATENCIES = [float(s) / 1000 for s in os.environ.get("CEN_BENCH_LATENCIES", "0,20,50").split(",")]
WORKERS = [int(s) for s in os.environ.get("CEN_BENCH_WORKERS", "1,2").split(",")]
CONCURRENCY = [int(s) for s in os.environ.get("CEN_BENCH_IO", "1,4,16").split(",")]
PRESET = os.environ.get("CEN_BENCH_PRESET", "demo")  # large: full-size COGs, 8 areas
PER_AREA = int(os.environ.get("CEN_BENCH_PER_AREA", "0"))  # first patches of each area; 0: all
SHARD = 16
ReadLog = list[tuple[str, Window]]  # (href, source window) of each read, in order


def _inputs(apis: dict[str, str], manifest: dict[str, Any]) -> tuple[list[Any], Any, Any]:
    cfg = RunConfig()
    keys, s2, wc = [], [], []
    for a in manifest["areas"]:
        bbox = tuple(a["bbox"])
        covering = list(Grid().covering(bbox))
        keys += covering[:PER_AREA] if PER_AREA else covering
        req = SearchRequest(apis["earth-search"], "sentinel-2-l2a", bbox, cfg.time.interval)
        s2 += [i.to_dict() for i in search(req).items]
        req = SearchRequest(apis["planetary-computer"], "esa-worldcover", bbox)
        wc += [i.to_dict() for i in search(req).items]
    return keys, list({i["id"]: i for i in s2}.values()), list({i["id"]: i for i in wc}.values())


def bench_world() -> tuple[Path, dict[str, Any]]:
    """The world these benchmarks read (``CEN_BENCH_PRESET``, seed 0), built once, and its
    manifest."""
    world = Path(tempfile.gettempdir()) / "cen-bench-worlds" / f"{PRESET}-seed0"
    return world, ensure_world(world, PRESET, 0)


def record_windows(world: Path, manifest: dict[str, Any]) -> tuple[int, list[ReadLog]]:
    """Patches, and the (local href, source window) of every read ingest makes, one list per
    shard task, from a pass over the world's files with the tasks the job makes."""
    with serve_world(world) as apis:  # local hrefs: the same items, windows and tiles
        keys, s2, wc = _inputs(apis, manifest)
    cfg = parse_config({"ingest": {"shard_patches": SHARD}})
    p = params_from(cfg)
    spec = StoreSpec("unused", len(keys), SHARD, p.bands, 256, "bench")
    logs: list[ReadLog] = []
    for t in make_tasks(keys, s2, wc, spec, p):
        log: ReadLog = []
        with Readers(log) as r:
            for key, s2i, wci in zip(t.keys, t.s2, t.wc, strict=True):
                ingest_patch(r, key, [t.items[i] for i in s2i], [t.items[i] for i in wci], p)
        logs.append(log)
    return len(keys), logs


def _tiles(ds: Any, win: Window) -> dict[tuple[int, int], int]:
    """(row, col) -> bytes of the written tiles of ``ds`` that ``win`` touches (a sparse tile,
    never written, needs no request; a window may overhang the raster)."""
    bh, bw = ds.block_shapes[0]
    rows, cols = -(-ds.height // bh), -(-ds.width // bw)
    r0, c0 = max(int(win.row_off) // bh, 0), max(int(win.col_off) // bw, 0)
    r1 = min((int(win.row_off) + int(win.height) - 1) // bh, rows - 1)
    c1 = min((int(win.col_off) + int(win.width) - 1) // bw, cols - 1)
    out = {}
    for i in range(r0, r1 + 1):
        for j in range(c0, c1 + 1):
            try:
                size = int(ds.block_size(1, i, j))
            except RasterBlockError:
                size = 0
            if size:
                out[(i, j)] = size
    return out


def _minimum(world: Path, manifest: dict[str, Any]) -> tuple[int, dict[str, tuple[int, int]]]:
    """Patches, and the (requests, bytes) a reader needs at least, two ways: ``task`` fetches
    the distinct COG tiles each shard task's read windows touch and one header per COG per
    task (nothing shared between tasks); ``run`` fetches every touched tile and header once
    in the whole run (a cache shared by every task: the floor)."""
    n, logs = record_windows(world, manifest)
    tiles = headers = nbytes = 0
    everywhere: dict[tuple[str, int, int], int] = {}
    with rasterio.Env(**GDAL_ENV):
        files: dict[str, Any] = {}
        for log in logs:
            touched: dict[tuple[str, int, int], int] = {}
            for href, win in log:
                if href not in files:
                    files[href] = rasterio.open(href)
                touched |= {(href, i, j): n for (i, j), n in _tiles(files[href], win).items()}
            everywhere |= touched
            tiles += len(touched)
            nbytes += sum(touched.values())
            headers += len({href for href, _ in log})
        for ds in files.values():
            ds.close()
    cogs = len({href for log in logs for href, _ in log})  # a header is read even if all sparse
    run = (len(everywhere) + cogs, sum(everywhere.values()))
    return n, {"task": (tiles + headers, nbytes), "run": run}


def _run(
    world: Path, manifest: dict[str, Any], latency: float, io: int, client: Client, out: Path
) -> tuple[float, int, int, int]:
    """(seconds, patches, requests, bytes) of one ingest through a fresh server."""
    with (
        serve_files(world, ServeOptions(latency=latency)) as fs,
        serve_world(world, files_url=fs.url) as apis,
    ):
        keys, s2, wc = _inputs(apis, manifest)
        fs.log.clear()
        cfg = parse_config(
            {"output": str(out), "ingest": {"shard_patches": SHARD, "io_concurrency": io}}
        )
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        ingest_patches(cfg, keys, s2, wc, apis, client)
        seconds = time.perf_counter() - t0
        c = fs.counters
    return seconds, len(keys), c.requests, c.bytes_sent


def main() -> None:
    world, manifest = bench_world()
    work = Path(tempfile.mkdtemp(prefix="cen-bench-ingest-http-"))
    n, least = _minimum(world, manifest)
    for how, (req, nbytes) in least.items():
        print(
            f"minimum from the tile index, tiles and headers fetched once per {how}: "
            f"{req / n:.2f} requests and {nbytes / n / 2**20:.3f} MiB per patch "
            f"({n} patches, {SHARD} per task)"
        )
    for workers in WORKERS:
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as lc,
            Client(lc) as client,
        ):
            _run(world, manifest, 0.0, 1, client, work / "warm")  # page cache, imports
            for latency in LATENCIES:
                base = None
                for io in CONCURRENCY:
                    s, n, req, nbytes = _run(world, manifest, latency, io, client, work / "run")
                    base = base or s
                    print(
                        f"ingest over HTTP, {latency * 1000:.0f} ms, {workers} worker(s), "
                        f"io_concurrency {io:2d}: {n} patches in {s:.1f} s = {n / s:.1f} "
                        f"patches/s (x{base / s:.2f} vs 1); {req / n:.1f} requests and "
                        f"{nbytes / n / 2**20:.3f} MiB per patch; requests x"
                        f"{req / least['task'][0]:.2f} the per-task minimum, x"
                        f"{req / least['run'][0]:.2f} the run's (bytes x"
                        f"{nbytes / least['run'][1]:.2f})"
                    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
