"""Ingest throughput on local files: our pipeline against two floors, then 1 worker against 2.

Both floors replay what a first pass of the pipeline recorded, from the same files, on the same
Dask workers, in the same shard tasks, and do nothing else (no scene choice, no cloud masks, no
Zarr):

- the *read* floor reads the source windows the pipeline read, with plain rasterio;
- the *warp* floor reads them and does the same warps: one GDAL warp per patch and band group
  onto the patch's grid (or the same paste, where the grids agree). Issue 14's target is the
  pipeline at most x1.5 this floor.

Each runs with 4 patches per shard task (many small tasks: the store's per-shard costs weigh
most) and with ingest's default of 16 (``CEN_BENCH_SHARDS`` picks others).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from distributed import Client, LocalCluster
from rasterio.warp import Resampling, reproject

sys.path.insert(0, str(Path(__file__).parent))
from _timing import best_of

from cenlib.config import parse_config
from cenlib.grid import Grid
from cenlib.ingest.read import GDAL_ENV, Readers, StackRead, pixels
from cenlib.ingest.stage import IngestParams, ingest_patch, ingest_patches, make_tasks, params_from
from cenlib.ingest.store import StoreSpec
from cenlib.stac.search import SearchRequest, search
from cenlib.stac.server import serve_world
from cenlib.world.build import ensure_world

SHARDS = [int(s) for s in os.environ.get("CEN_BENCH_SHARDS", "4,16").split(",")]


def _floor_task(windows: list[tuple[str, Any]]) -> int:
    """Plain rasterio: open each file once, read each recorded window."""
    n = 0
    with rasterio.Env(**GDAL_ENV):
        handles: dict[str, Any] = {}
        for href, win in windows:
            ds = handles.get(href) or handles.setdefault(href, rasterio.open(href))
            n += int(ds.read(1, window=win).size)
        for ds in handles.values():
            ds.close()
    return n


def _warp_floor_task(stacks: list[StackRead], check: bool = False) -> int:
    """Plain rasterio and GDAL: each recorded stack's windows, then its one warp (or paste).
    With ``check``, each result must be the pixels the pipeline's read gave (same warps)."""
    n = 0
    with rasterio.Env(**GDAL_ENV):
        handles: dict[str, Any] = {}
        for s in stacks:
            datas = []
            for href in s.hrefs:
                ds = handles.get(href) or handles.setdefault(href, rasterio.open(href))
                datas.append(ds.read(1, window=s.window))
            out = np.full((len(datas), *s.dst.shape.yx), s.nodata, dtype=datas[0].dtype)
            if s.paste is not None:
                out[:, s.paste[0], s.paste[1]] = np.stack(datas)
            else:
                reproject(
                    np.stack(datas),
                    out,
                    src_transform=s.src.affine,
                    src_crs=str(s.src.crs),
                    src_nodata=s.src_nodata,
                    dst_transform=s.dst.affine,
                    dst_crs=str(s.dst.crs),
                    dst_nodata=s.nodata,
                    resampling=Resampling[s.resampling],
                )
            if check and pixels(out) != s.digest:
                raise AssertionError(
                    f"warp floor pixels differ from ingest's: {s.hrefs} onto {s.dst}"
                )
            n += int(out.size)
        for ds in handles.values():
            ds.close()
    return n


def _record(
    tasks: list[Any], p: IngestParams
) -> tuple[list[list[tuple[str, Any]]], list[list[StackRead]]]:
    logs, stacks = [], []
    for t in tasks:
        log: list[tuple[str, Any]] = []
        with Readers(log) as r:
            r.stacks = []
            for key, s2i, wci in zip(t.keys, t.s2, t.wc, strict=True):
                ingest_patch(r, key, [t.items[i] for i in s2i], [t.items[i] for i in wci], p)
            stacks.append(r.stacks)
        logs.append(log)
    return logs, stacks


def _measure(
    client: Client,
    cfg: Any,
    keys: list[Any],
    s2: list[Any],
    wc: list[Any],
    urls: dict[str, str],
    logs: list[list[tuple[str, Any]]],
    stacks: list[list[StackRead]],
) -> tuple[float, float, float]:
    def pipeline() -> None:
        shutil.rmtree(cfg.output, ignore_errors=True)
        ingest_patches(cfg, keys, s2, wc, urls, client)

    def floor() -> None:
        client.gather(client.map(_floor_task, logs, pure=False))

    def warp_floor() -> None:
        client.gather(client.map(_warp_floor_task, stacks, pure=False))

    floor()  # warm the page cache and the workers
    warp_floor()
    return best_of(floor, 3), best_of(warp_floor, 3), best_of(pipeline, 3)


def _inputs(
    kind: str, urls: dict[str, str], manifest: dict[str, Any]
) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The world's patches on grid `kind`, and the Sentinel-2 and WorldCover items over them."""
    interval = parse_config({}).time.interval
    keys, s2, wc = [], [], []
    for a in manifest["areas"]:
        bbox = tuple(a["bbox"])
        keys += list(Grid(kind).covering(bbox))
        req = SearchRequest(urls["earth-search"], "sentinel-2-l2a", bbox, interval)
        s2 += [i.to_dict() for i in search(req).items]
        req = SearchRequest(urls["planetary-computer"], "esa-worldcover", bbox)
        wc += [i.to_dict() for i in search(req).items]
    return keys, s2, list({i["id"]: i for i in wc}.values())


def main() -> None:
    world = Path(tempfile.gettempdir()) / "cen-bench-worlds" / "demo-seed0"
    manifest = ensure_world(world, "demo", 0)
    work = Path(tempfile.mkdtemp(prefix="cen-bench-ingest-"))
    with serve_world(world) as urls:
        # Searched once per grid: both shard sizes ingest the same patches from the same items.
        inputs = {k: _inputs(k, urls, manifest) for k in ("chatearthnet", "utm")}
        for kind, shard in ((k, s) for k in ("chatearthnet", "utm") for s in SHARDS):
            cfg = parse_config(
                {
                    "output": str(work / kind),
                    "grid": {"kind": kind},
                    "ingest": {"shard_patches": shard},
                }
            )
            keys, s2, wc = inputs[kind]
            p = params_from(cfg)
            spec = StoreSpec("unused", len(keys), shard, p.bands, 256, "bench")
            tasks = make_tasks(keys, s2, wc, spec, p)
            logs, stacks = _record(tasks, p)
            for x in stacks:
                _warp_floor_task(x, check=True)
            n_reads = sum(len(x) for x in logs)
            n_warps = sum(s.paste is None for x in stacks for s in x)
            for workers in (1, 2):
                with (
                    LocalCluster(
                        n_workers=workers, threads_per_worker=1, dashboard_address=":0"
                    ) as lc,
                    Client(lc) as client,
                ):
                    t_floor, t_warp, t_pipe = _measure(
                        client, cfg, keys, s2, wc, urls, logs, stacks
                    )
                    print(
                        f"ingest {kind}, {len(keys)} patches, {shard} per task, "
                        f"{n_reads} window reads, "
                        f"{n_warps} warps, {workers} worker(s): read floor {t_floor:.3f} s, "
                        f"warp floor {t_warp:.3f} s, pipeline {t_pipe:.3f} s "
                        f"({len(keys) / t_pipe:.0f} patches/s): x{t_pipe / t_floor:.2f} the "
                        f"read floor, x{t_pipe / t_warp:.2f} the warp floor (target <= x1.5)"
                    )
                    if workers == 1:
                        one = t_pipe
            print(f"ingest {kind}, {shard} per task: 2 workers vs 1, speed-up x{one / t_pipe:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
