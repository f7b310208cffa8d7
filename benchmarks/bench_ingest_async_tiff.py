"""COG window reads at cloud latency: tuned GDAL (rasterio) against developmentseed's async-tiff
with obstore's HTTPStore (issue 14), reading only, side by side in one process.

The windows are exactly those ingest reads (band 1 of each asset, recorded per shard task from a
pass over the demo world's local files with ``Readers(log)``: bench_ingest_http's
``record_windows``). Both sides read them from the loopback object-store server
(cenlib.stac.files) with 0, 20 and 50 ms before each response's first byte, a fresh server (a
new port, so nothing cached in an earlier run is reused) for every run, shard task after shard
task, with concurrency 1, 4 and 16 inside each task:

- **GDAL**: rasterio under ``rasterio.Env(**GDAL_ENV)`` (ingest's settings), a thread pool of
  that many threads pulling the task's windows, each thread with its own handle per COG (GDAL
  handles are not thread-safe), ``ds.read(1, window=w)`` as ``Readers.read`` does (not
  boundless: a window is cut to the raster). GDAL's /vsicurl/ cache is process-wide, so a tile
  or header fetched by one thread or task is not fetched again in the same run.
- **async-tiff**: each COG opened once per task (``TIFF.open`` through one ``HTTPStore``), and
  per window the tiles that cover it fetched (``fetch_tiles``: object_store coalesces nearby
  ranges into one request) and decoded (``Tile.decode``, Rust threads), under an
  ``asyncio.Semaphore`` of that many windows; a tile two windows of a task share is fetched
  once; sparse tiles (TileByteCounts 0, most of a WorldCover COG) are not fetched but filled
  with the nodata value, as GDAL does. Then the window is cut from the tiles.
- **async-tiff, run cache**: the same, with the opened COGs and their decoded tiles kept for
  the whole run, as GDAL's /vsicurl/ cache keeps their bytes: what is left between it and GDAL
  is the reader itself (requests, decode, scheduling), not the caching.

Every window's pixels must be identical on every side (asserted: the trial's correctness
check). Prints per (latency, concurrency): windows, wall seconds and windows/s per side, the
ratio to GDAL's, and HTTP requests and bytes per side from the server's log. Asserts no
time. Needs the ``bench`` extra (``make bench-deps``). CEN_BENCH_LATENCIES (ms), CEN_BENCH_IO
(concurrency) and CEN_BENCH_TASKS (the first N shard tasks; default all) choose other runs.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
from async_tiff import TIFF
from obstore.store import HTTPStore
from rasterio.windows import Window

from cenlib.ingest.read import GDAL_ENV
from cenlib.stac.files import ServeOptions, serve_files

sys.path.insert(0, str(Path(__file__).parent))
from bench_ingest_http import CONCURRENCY, LATENCIES, ReadLog, bench_world, record_windows

TASKS = int(os.environ.get("CEN_BENCH_TASKS", "0")) or None
Array = npt.NDArray[Any]
Reader = Callable[[str, list[ReadLog], int], list[list[Array]]]
Jobs = queue.SimpleQueue[tuple[int, str, Window]]  # (index in the task, path, window)


def _relative(world: Path, logs: list[ReadLog]) -> list[ReadLog]:
    """The recorded local hrefs as paths under the world's root (what the server serves)."""
    root = world.resolve()
    return [
        [
            (Path(h.removeprefix("file://")).resolve().relative_to(root).as_posix(), w)
            for h, w in log
        ]
        for log in logs
    ]


# -- side A: GDAL ---------------------------------------------------------------------------


def _gdal_worker(url: str, jobs: Jobs, out: list[Any]) -> None:
    """One thread: its own handles, windows pulled from the task's shared queue."""
    with rasterio.Env(**GDAL_ENV):  # GDAL's options are per thread
        handles: dict[str, Any] = {}
        try:
            while True:
                try:
                    i, path, win = jobs.get_nowait()
                except queue.Empty:
                    return
                if path not in handles:
                    handles[path] = rasterio.open(f"{url}/{path}")
                out[i] = handles[path].read(1, window=win)
        finally:
            for ds in handles.values():
                ds.close()


def _gdal_task(url: str, task: ReadLog, io: int) -> list[Array]:
    out: list[Any] = [None] * len(task)
    jobs: Jobs = queue.SimpleQueue()
    for i, (path, win) in enumerate(task):
        jobs.put((i, path, win))
    with ThreadPoolExecutor(io) as pool:
        for f in [pool.submit(_gdal_worker, url, jobs, out) for _ in range(io)]:
            f.result()
    return out


def read_gdal(url: str, tasks: list[ReadLog], io: int) -> list[list[Array]]:
    return [_gdal_task(url, task, io) for task in tasks]


# -- side B: async-tiff ---------------------------------------------------------------------


def _dtype(ifd: Any) -> np.dtype[Any]:
    kind = {1: "u", 2: "i", 3: "f"}[int(ifd.sample_format[0])]
    return np.dtype(f"<{kind}{ifd.bits_per_sample[0] // 8}")


@dataclass
class _Cog:
    """One opened COG: its full-resolution IFD's geometry, and the tiles asked for so far
    (decoded, by (column, row); sparse ones never enter)."""

    tiff: Any
    width: int
    height: int
    tile: tuple[int, int]  # (height, width)
    across: int
    counts: list[int]
    dtype: np.dtype[Any]
    nodata: float
    tiles: dict[tuple[int, int], asyncio.Future[Array]] = field(default_factory=dict)

    @classmethod
    async def open(cls, path: str, store: HTTPStore) -> _Cog:
        tiff = await TIFF.open(path, store=store)
        ifd = tiff.ifds[0]
        nodata = float(ifd.gdal_nodata) if ifd.gdal_nodata else 0.0
        shape = (ifd.tile_height, ifd.tile_width)
        counts = list(ifd.tile_byte_counts)
        across = ifd.tile_count[0]
        return cls(
            tiff, ifd.image_width, ifd.image_height, shape, across, counts, _dtype(ifd), nodata
        )


async def _decoded(cog: _Cog, xy: list[tuple[int, int]]) -> list[Array]:
    tiles = await cog.tiff.fetch_tiles(xy, 0)
    arrays = await asyncio.gather(*(t.decode() for t in tiles))
    return [np.asarray(a)[:, :, 0] for a in arrays]


async def _pick(batch: asyncio.Future[list[Array]], k: int) -> Array:
    return (await batch)[k]


def _request(cog: _Cog, xy: list[tuple[int, int]]) -> None:
    """Fetch the written tiles of ``xy`` the task has not asked for yet, in one call."""
    new = [t for t in xy if t not in cog.tiles and cog.counts[t[1] * cog.across + t[0]]]
    if new:
        batch = asyncio.ensure_future(_decoded(cog, new))
        for k, t in enumerate(new):
            cog.tiles[t] = asyncio.ensure_future(_pick(batch, k))


async def _window(cog: _Cog, win: Window) -> Array:
    """``win`` cut to the raster (as a non-boundless rasterio read), assembled from tiles."""
    r0, c0 = max(int(win.row_off), 0), max(int(win.col_off), 0)
    r1 = min(int(win.row_off) + int(win.height), cog.height)
    c1 = min(int(win.col_off) + int(win.width), cog.width)
    th, tw = cog.tile
    xy = [(x, y) for y in range(r0 // th, -(-r1 // th)) for x in range(c0 // tw, -(-c1 // tw))]
    _request(cog, xy)
    out = np.full((max(r1 - r0, 0), max(c1 - c0, 0)), cog.nodata, dtype=cog.dtype)
    for x, y in xy:
        if (x, y) not in cog.tiles:
            continue  # sparse: nodata, as GDAL reads it
        data = await cog.tiles[(x, y)]
        ys, xs = max(r0, y * th), max(c0, x * tw)
        ye, xe = min(r1, (y + 1) * th), min(c1, (x + 1) * tw)
        part = data[ys - y * th : ye - y * th, xs - x * tw : xe - x * tw]
        out[ys - r0 : ye - r0, xs - c0 : xe - c0] = part
    return out


Cogs = dict[str, asyncio.Future[_Cog]]


async def _async_task(store: HTTPStore, task: ReadLog, io: int, cogs: Cogs) -> list[Array]:
    gate = asyncio.Semaphore(io)

    async def one(path: str, win: Window) -> Array:
        async with gate:
            if path not in cogs:  # opened once; later windows wait on the same open
                cogs[path] = asyncio.ensure_future(_Cog.open(path, store))
            return await _window(await cogs[path], win)

    return list(await asyncio.gather(*(one(p, w) for p, w in task)))


async def _async_all(url: str, tasks: list[ReadLog], io: int, shared: bool) -> list[list[Array]]:
    store = HTTPStore(url, client_options={"allow_http": True})
    run: Cogs = {}
    return [await _async_task(store, t, io, run if shared else {}) for t in tasks]


def read_async_tiff(url: str, tasks: list[ReadLog], io: int) -> list[list[Array]]:
    """Headers and tiles fetched once per task (what the issue asks)."""
    return asyncio.run(_async_all(url, tasks, io, shared=False))


def read_async_tiff_run(url: str, tasks: list[ReadLog], io: int) -> list[list[Array]]:
    """Headers and decoded tiles kept for the whole run, as GDAL's process-wide cache keeps
    their bytes: the same requests as GDAL, so what is left is the reader itself."""
    return asyncio.run(_async_all(url, tasks, io, shared=True))


SIDES: dict[str, Reader] = {
    "GDAL": read_gdal,
    "async-tiff, per task": read_async_tiff,
    "async-tiff, run cache": read_async_tiff_run,
}


# -- the trial --------------------------------------------------------------------------------


def _timed(
    world: Path, read: Reader, tasks: list[ReadLog], latency: float, io: int
) -> tuple[float, int, int, list[list[Array]]]:
    """(seconds, requests, bytes, arrays) of one side's reads through a fresh server."""
    with serve_files(world, ServeOptions(latency=latency)) as fs:
        t0 = time.perf_counter()
        arrays = read(fs.url, tasks, io)
        seconds = time.perf_counter() - t0
        c = fs.counters
    return seconds, c.requests, c.bytes_sent, arrays


def _check(tasks: list[ReadLog], a: list[list[Array]], b: list[list[Array]]) -> None:
    for task, xs, ys in zip(tasks, a, b, strict=True):
        for (path, win), x, y in zip(task, xs, ys, strict=True):
            assert x.dtype == y.dtype and np.array_equal(x, y), f"{path} {win}: pixels differ"


def _line(name: str, n: int, run: tuple[Any, ...], base: tuple[Any, ...]) -> str:
    (s, req, nbytes), (s0, req0, nbytes0) = run[:3], base[:3]
    return (
        f"  {name:22s} {s:6.2f} s = {n / s:4.0f} windows/s (x{s0 / s:.2f} GDAL's), "
        f"{req:4d} requests (x{req / req0:.2f}), "
        f"{nbytes / 2**20:5.1f} MiB (x{nbytes / nbytes0:.2f})"
    )


def main() -> None:
    world, manifest = bench_world()
    _, logs = record_windows(world, manifest)
    tasks = _relative(world, logs)[:TASKS]
    n = sum(len(t) for t in tasks)
    cogs = len({p for t in tasks for p, _ in t})
    print(f"{n} windows of {cogs} COGs in {len(tasks)} shard tasks (the reads ingest makes)")
    for read in SIDES.values():  # warm: page cache, imports, thread pools
        _timed(world, read, tasks[:1], 0.0, 1)
    for latency in LATENCIES:
        for io in CONCURRENCY:
            runs = {name: _timed(world, read, tasks, latency, io) for name, read in SIDES.items()}
            base = runs["GDAL"]
            for run in runs.values():
                _check(tasks, base[3], run[3])
            print(f"{latency * 1000:.0f} ms, concurrency {io}: pixels identical on every side")
            for name, run in runs.items():
                print(_line(name, n, run, base))


if __name__ == "__main__":
    main()
