"""The analyze stage on Dask: region counts and layout of every patch of the run's store.

``run_analysis`` (through ``analyze_store``) reads ``land_cover`` block by block (each block
whole shards of the store, one task named ``analyze-<block>-<token>``), runs
:func:`region_counts` and :func:`layout` on the patches whose ``status`` is ``ok``, writes
the store array

    region_counts  (patch, region, class)  int32   pixels per class in each of ``REGIONS``;
                                                   chunk = one task's block of whole shards,
                                                   written whole by that task

and returns each block's rows to the client, which writes them in patch order (a bounded window
of tasks in flight, so memory stays flat) to ``<out_dir>/analysis.parquet``, one row per patch:

==================================  =======  ==================================================
column                              type     meaning
==================================  =======  ==================================================
patch_id, status                    string   from the store (``ok``, ``failed``, or empty for
                                             a shard never ingested)
count_<region>_<class>              int32    pixels of the class in the region, for every
                                             region of ``REGIONS`` and all 12 classes
                                             (background included): 0 unless ``ok``
frac_<region>_<class>               float32  class pixels / non-background pixels of the
                                             region (ChatEarthNet's proportion), classes 1..11;
                                             0 for an all-background region, NaN unless ``ok``
<field>_<class>                     varies   :data:`LAYOUT_DTYPE` fields (components,
                                             largest_share, largest_patch_share, elongation,
                                             orientation, edges, fragmentation) for classes
                                             1..11; zero / NaN unless ``ok``
==================================  =======  ==================================================

Region and class names become snake case: ``count_top_left_water``, ``frac_whole_tree``,
``frac_bottom_right_corner_developed_area``, ``elongation_water``, ``edges_bare_land``.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
from distributed import Client, span
from zarr.codecs import ZstdCodec

from cenlib.analysis.kernels import REGIONS, fractions, region_counts
from cenlib.analysis.layout import LAYOUT_DTYPE, LAYOUT_FIELDS, layout
from cenlib.analysis.read import COUNTS_ARRAY, TABLE, slug
from cenlib.classes import CLASS_NAMES, NUM_CLASSES
from cenlib.config import RunConfig
from cenlib.ingest import array, open_group, store_url
from cenlib.io import stable_hash
from cenlib.summary import Summary

ANALYSIS_VERSION = 1
READ_BATCH = 16  # chunks zarr decodes per batch when reading land_cover


@dataclass(frozen=True)
class AnalysisSummary(Summary):
    store: str
    table: str
    patches: int
    ok: int
    failed: int
    tasks: int
    seconds: float

    def line(self) -> str:
        return f"analyze: {self.ok} patches in {self.seconds} s -> {self.table}"


@dataclass(frozen=True)
class AnalyzeTask:
    """Plain data for one task: patches [start, stop) of the store, whole shards."""

    url: str
    index: int
    start: int
    stop: int
    factor: int  # block size of the layout's presence grid; 0 skips the layout


def _empty_layout(n: int) -> npt.NDArray[Any]:
    out = np.zeros((n, NUM_CLASSES), LAYOUT_DTYPE)
    for name in ("elongation", "orientation", "fragmentation"):
        out[name] = np.nan
    return out


def patch_table(
    patch_id: npt.ArrayLike,
    status: npt.ArrayLike,
    counts: npt.NDArray[np.int32],
    lay: npt.NDArray[Any],
) -> pa.Table:
    """The Parquet rows of a block of patches (columns in the module docstring)."""
    status = np.asarray(status, dtype=str)
    ok = status == "ok"
    frac = fractions(counts).astype(np.float32)
    frac[~ok] = np.nan
    cols: dict[str, Any] = {
        "patch_id": pa.array(np.asarray(patch_id, dtype=str)),
        "status": pa.array(status),
    }
    for r, region in enumerate(REGIONS):
        for k, cls in enumerate(CLASS_NAMES):
            cols[f"count_{slug(region)}_{slug(cls)}"] = np.ascontiguousarray(counts[:, r, k])
    for r, region in enumerate(REGIONS):
        for k in range(1, NUM_CLASSES):
            name = f"frac_{slug(region)}_{slug(CLASS_NAMES[k])}"
            cols[name] = np.ascontiguousarray(frac[:, r, k])
    for field in LAYOUT_FIELDS:
        for k in range(1, NUM_CLASSES):
            cols[f"{field}_{slug(CLASS_NAMES[k])}"] = np.ascontiguousarray(lay[field][:, k])
    return pa.table(cols)


def analyze_block(task: AnalyzeTask) -> tuple[pa.Table, dict[str, Any]]:
    """Runs on a worker: one block of whole shards; writes its region counts to the store."""
    t0 = time.perf_counter()
    g = open_group(task.url, "r+")
    rows = slice(task.start, task.stop)
    # zarr spends far longer per one-patch chunk than zstd does (about 250 vs 30 us); decoding
    # the chunks of a shard in batches takes about a third of that off.
    with zarr.config.set({"codec_pipeline.batch_size": READ_BATCH}):
        labels = np.asarray(array(g, "land_cover")[rows])
    # zarr hands strings back as numpy's StringDType, which does not cast to "U" arrays
    status = np.asarray(array(g, "status")[rows]).astype(object).astype(str)
    ids = np.asarray(array(g, "patch_id")[rows]).astype(object).astype(str)
    ok = status == "ok"
    n = task.stop - task.start
    counts = np.zeros((n, len(REGIONS), NUM_CLASSES), np.int32)
    lay = _empty_layout(n)
    if ok.any():
        good = labels[ok]
        counts[ok] = region_counts(good)
        if task.factor:
            # the largest block size dividing both: patch sizes need not be multiples of 4
            lay[ok] = layout(good, math.gcd(task.factor, good.shape[1]))
    array(g, COUNTS_ARRAY)[rows] = counts
    table = patch_table(ids, status, counts, lay)
    return table, {
        "block": task.index,
        "patches": n,
        "ok": int(ok.sum()),
        "seconds": time.perf_counter() - t0,
    }


def _prepare(url: str, batch: int) -> tuple[int, int, str]:
    """Patches, patches per task and store fingerprint; (re)creates ``region_counts``."""
    g = open_group(url, "r+")
    lc = array(g, "land_cover")
    n, size = lc.shape[0], lc.shape[1]
    found = g.attrs.get("shard_patches")
    shard = found if isinstance(found, int) and found > 0 else lc.chunks[0]
    per_task = max(shard, -(-batch // shard) * shard)  # whole shards: one writer per chunk
    # One chunk per task: each task writes its own chunk in one call (16 small chunks cost more
    # in zarr's per-chunk overhead than counting their patches).
    shape, chunks = (n, len(REGIONS), NUM_CLASSES), (per_task, len(REGIONS), NUM_CLASSES)
    old = g.get(COUNTS_ARRAY)
    if not (isinstance(old, zarr.Array) and old.shape == shape and old.chunks == chunks):
        g.create_array(
            COUNTS_ARRAY,
            shape=shape,
            chunks=chunks,
            dtype="int32",
            fill_value=0,
            compressors=(ZstdCodec(level=3),),
            dimension_names=("patch", "region", "class"),
            overwrite=True,
        )
    array(g, COUNTS_ARRAY).attrs.update(
        {
            "long_name": "pixels per land-cover class in each region of the patch",
            "regions": list(REGIONS),
            "classes": list(CLASS_NAMES),
            "patch_size": size,
            "analysis_version": ANALYSIS_VERSION,
        }
    )
    return n, per_task, str(g.attrs.get("fingerprint", ""))


def run_analysis(cfg: RunConfig, client: Client) -> AnalysisSummary:
    """The stage's entry: analyze the run's store as ``cfg.analysis`` says."""
    a = cfg.analysis
    return analyze_store(
        store_url(cfg), client, cfg.output, a.batch, a.layout_block if a.layout else 0
    )


def analyze_store(
    url: str, client: Client, out_dir: Path, batch: int = 256, factor: int = 4
) -> AnalysisSummary:
    """Analyze every patch of the store at ``url``; returns the stage summary.

    ``batch``: patches per task, rounded up to whole shards. ``factor``: block size of the
    layout's presence grid (reduced to a divisor of the patch size; 0 skips the layout, whose
    columns then stay zero / NaN). Every run recomputes every patch (about 0.3 ms each) and
    rewrites ``region_counts`` and the table, so the outputs always match the store.
    """
    n, per_task, store_fp = _prepare(url, batch)
    token = stable_hash(url, store_fp, ANALYSIS_VERSION, per_task, factor)[:8]
    tasks = [
        AnalyzeTask(url, i, a, min(a + per_task, n), factor)
        for i, a in enumerate(range(0, n, per_task))
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = out_dir / TABLE, out_dir / f".{TABLE}.tmp"
    window = max(2, 2 * sum(client.nthreads().values()))
    t0 = time.perf_counter()
    ok = 0
    with span("analyze"):
        writer = None
        try:
            for table, info in _in_order(client, tasks, token, window):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                ok += info["ok"]
            if writer is None:  # an empty store still gets a table with every column
                empty = np.zeros((0, len(REGIONS), NUM_CLASSES), np.int32)
                pq.write_table(patch_table([], [], empty, _empty_layout(0)), tmp)
        finally:
            if writer is not None:
                writer.close()
    os.replace(tmp, path)
    seconds = time.perf_counter() - t0
    return AnalysisSummary(
        store=url,
        table=str(path),
        patches=n,
        ok=ok,
        failed=n - ok,
        tasks=len(tasks),
        seconds=round(seconds, 2),
    )


def _in_order(
    client: Any, tasks: list[AnalyzeTask], token: str, window: int
) -> Iterator[tuple[pa.Table, dict[str, Any]]]:
    """Results in task order, with at most ``window`` tasks submitted and not yet collected."""
    todo = iter(tasks)
    pending: deque[Any] = deque()

    def submit() -> None:
        t = next(todo, None)
        if t is not None:
            key = f"analyze-{t.index:05d}-{token}"
            pending.append(client.submit(analyze_block, t, key=key, pure=False))

    for _ in range(window):
        submit()
    while pending:
        fut = pending.popleft()
        result: tuple[pa.Table, dict[str, Any]] = fut.result()
        fut.release()
        submit()
        yield result
