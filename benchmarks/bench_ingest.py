"""Ingest throughput: our pipeline against the floor of plain rasterio windowed reads.

The floor reads exactly the source windows the pipeline reads (recorded from a first pass),
from the same files, on the same Dask workers, and does nothing else: no scene choice, no
warping, no Zarr. Then the pipeline on 1 worker against 2 workers.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import rasterio
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).parent))
from _timing import best_of

from cenlib.config import parse_config
from cenlib.grid import Grid
from cenlib.ingest.read import GDAL_ENV, Readers
from cenlib.ingest.stage import IngestParams, ingest_patch, ingest_patches, make_tasks, params_from
from cenlib.ingest.store import StoreSpec
from cenlib.stac.search import SearchRequest, search
from cenlib.stac.server import serve_world
from cenlib.world.build import ensure_world

SHARD = 4


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


def _record(tasks: list[Any], p: IngestParams) -> list[list[tuple[str, Any]]]:
    logs = []
    for t in tasks:
        log: list[tuple[str, Any]] = []
        with Readers(log) as r:
            for key, s2i, wci in zip(t.keys, t.s2, t.wc, strict=True):
                ingest_patch(r, key, [t.items[i] for i in s2i], [t.items[i] for i in wci], p)
        logs.append(log)
    return logs


def _measure(
    client: Client,
    cfg: Any,
    keys: list[Any],
    s2: list[Any],
    wc: list[Any],
    urls: dict[str, str],
    logs: list[list[tuple[str, Any]]],
) -> tuple[float, float]:
    def pipeline() -> None:
        shutil.rmtree(cfg.output, ignore_errors=True)
        ingest_patches(cfg, keys, s2, wc, urls, client)

    def floor() -> None:
        client.gather(client.map(_floor_task, logs, pure=False))

    floor()  # warm the page cache and the workers
    return best_of(floor, 3), best_of(pipeline, 3)


def main() -> None:
    world = Path(tempfile.gettempdir()) / "cen-bench-worlds" / "demo-seed0"
    manifest = ensure_world(world, "demo", 0)
    work = Path(tempfile.mkdtemp(prefix="cen-bench-ingest-"))
    with serve_world(world) as urls:
        for kind in ("chatearthnet", "utm"):
            cfg = parse_config(
                {
                    "output": str(work / kind),
                    "grid": {"kind": kind},
                    "ingest": {"shard_patches": SHARD},
                }
            )
            keys, s2, wc = [], [], []
            for a in manifest["areas"]:
                bbox = tuple(a["bbox"])
                keys += list(Grid(kind).covering(bbox))
                s2 += [
                    i.to_dict()
                    for i in search(
                        SearchRequest(
                            urls["earth-search"], "sentinel-2-l2a", bbox, cfg.time.interval
                        )
                    ).items
                ]
                wc += [
                    i.to_dict()
                    for i in search(
                        SearchRequest(urls["planetary-computer"], "esa-worldcover", bbox)
                    ).items
                ]
            wc = list({i["id"]: i for i in wc}.values())
            p = params_from(cfg)
            spec = StoreSpec("unused", len(keys), SHARD, p.bands, 256, "bench")
            tasks = make_tasks(keys, s2, wc, spec, p)
            logs = _record(tasks, p)
            n_reads = sum(len(x) for x in logs)
            for workers in (1, 2):
                with (
                    LocalCluster(
                        n_workers=workers, threads_per_worker=1, dashboard_address=":0"
                    ) as lc,
                    Client(lc) as client,
                ):
                    t_floor, t_pipe = _measure(client, cfg, keys, s2, wc, urls, logs)
                    print(
                        f"ingest {kind}, {len(keys)} patches, {n_reads} window reads, "
                        f"{workers} worker(s): rasterio floor {t_floor:.3f} s, pipeline "
                        f"{t_pipe:.3f} s, ratio x{t_pipe / t_floor:.2f} "
                        f"({len(keys) / t_pipe:.0f} patches/s)"
                    )
                    if workers == 1:
                        one = t_pipe
            print(f"ingest {kind}: 2 workers vs 1, speed-up x{one / t_pipe:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
