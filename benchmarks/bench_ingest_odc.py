"""Ingest against odc-stac's ``load`` at cloud latency (issue 14, "Measured").

The demo world's COGs are served over HTTP by the loopback object-store server
(cenlib.stac.files) with 0, 20 and 50 ms before each response's first byte, a fresh server (new
port, so nothing cached by GDAL in an earlier run is reused) for every run. The same patches
(the first CEN_BENCH_PATCHES, default 48, of the world's covering that ingest reads to the end,
i.e. status ok; the others stop at WorldCover or at scene choice) go through:

- **ours**: ``ingest_patches`` (one Dask task per shard of 16 patches), ingest.io_concurrency
  1, 4 and 16 (CEN_BENCH_IO). It reads WorldCover, the SCL of candidate days (scoring stops at
  the first perfect day) and the chosen day's bands, and writes the Zarr store.
- **odc-stac**: the same Dask tasks (one per shard of 16 patches, patches one after another),
  each patch loaded by ``odc.stac.load(..., geobox=patch_geobox, chunks=None, pool=P)`` with P in
  1, 4 and 16 (CEN_BENCH_POOLS; the best is kept and named), GDAL set up by
  ``odc.stac.configure_rio(cloud_defaults=True)`` as odc-stac's docs advise. The items are the
  ones our ingest used, read back from its store: per patch, three loads of the same http
  items our ingest read, onto the patch's GeoBox:
  SCL of the candidate days our scene choice scored (nearest, groupby solar_day), the chosen
  day's bands (``ingest.resampling``, groupby solar_day) and WorldCover ``map`` (nearest).
  "everything" is the wall time of all three; "bands only" is the time of the bands load alone,
  timed inside the same run (summed over patches, divided by the workers: an estimate with 2
  workers). odc-stac writes no store and does no scaling or class mapping, so both favour it;
  "bands only" is still compared with our full ingest (which cannot skip SCL or WorldCover).
  Where the two read differently: our day SCL stops at the first tile that covers the patch,
  odc-stac fuses every tile of the day.

HTTP requests and bytes per patch come from the server's log, split by asset (bands, SCL,
WorldCover) from the request path. CEN_BENCH_LATENCIES (ms, default 0,20,50), CEN_BENCH_WORKERS
(default 1,2), CEN_BENCH_IO, CEN_BENCH_POOLS and CEN_BENCH_PATCHES choose other runs. The
table keeps each side's best setting per row. Prints; asserts nothing. About 10 min here.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from bench_ingest_http import _inputs, bench_world
from distributed import Client, LocalCluster

from cenlib.config import RunConfig, parse_config
from cenlib.grid import PatchKey
from cenlib.ingest.scenes import candidates
from cenlib.ingest.stage import assign, ingest_patches
from cenlib.ingest.store import array, open_group
from cenlib.stac.files import FileServer, ServeOptions, serve_files
from cenlib.stac.server import serve_world

LATENCIES = [float(s) / 1000 for s in os.environ.get("CEN_BENCH_LATENCIES", "0,20,50").split(",")]
WORKERS = [int(s) for s in os.environ.get("CEN_BENCH_WORKERS", "1,2").split(",")]
CONCURRENCY = [int(s) for s in os.environ.get("CEN_BENCH_IO", "1,4,16").split(",")]
POOLS = [int(s) for s in os.environ.get("CEN_BENCH_POOLS", "1,4,16").split(",")]
PATCHES = int(os.environ.get("CEN_BENCH_PATCHES", "48"))
SHARD = 16
KINDS = ("bands", "scl", "wc")

Item = dict[str, Any]


def _kind(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    if "worldcover" in name:
        return "wc"
    return "scl" if name.startswith("scl") else "bands"


def _traffic(fs: FileServer) -> dict[str, tuple[int, int]]:
    """(requests, bytes) by asset kind, from the server's log (the token API and STAC JSON are
    not on this server)."""
    req: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    for r in fs.log:
        k = _kind(r.path)
        req[k] += 1
        nbytes[k] += r.bytes_sent
    return {k: (req[k], nbytes[k]) for k in KINDS}


def _config(out: Path, io: int) -> RunConfig:
    return parse_config(
        {"output": str(out), "ingest": {"shard_patches": SHARD, "io_concurrency": io}}
    )


def _run_ours(
    world: Path,
    manifest: dict[str, Any],
    latency: float,
    io: int,
    client: Client,
    out: Path,
    ids: list[str] | None = None,
) -> dict[str, Any]:
    with (
        serve_files(world, ServeOptions(latency=latency)) as fs,
        serve_world(world, files_url=fs.url) as apis,
    ):
        keys, s2, wc = _inputs(apis, manifest)
        if ids is not None:
            keys = [k for k in keys if k.id in set(ids)]
        fs.log.clear()
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        ingest_patches(_config(out, io), keys, s2, wc, apis, client)
        seconds = time.perf_counter() - t0
        traffic = _traffic(fs)
    return {"seconds": seconds, "n": len(keys), "traffic": traffic, "keys": keys, "s2": s2}


def _plan(run: dict[str, Any], store: str) -> list[dict[str, Any]]:
    """Per patch, the item ids our ingest read: SCL days it scored, chosen day, WorldCover."""
    g = open_group(store)
    col = {
        name: np.asarray(array(g, name)[:])
        for name in ("status", "reason", "s2_items", "wc_items", "cloud_fraction")
    }
    col["nodata_fraction"] = np.asarray(array(g, "nodata_fraction")[:])
    keys: list[PatchKey] = run["keys"]
    s2: list[Item] = run["s2"]
    season = RunConfig().time.season_of

    plan = []
    for i, (key, idx) in enumerate(zip(keys, assign(keys, s2), strict=True)):
        chosen = [s for s in str(col["s2_items"][i]).split(",") if s]
        wc_ids = [s for s in str(col["wc_items"][i]).split(",") if s]
        cands = [
            c
            for c in candidates([s2[j] for j in idx])
            if season(dt.date.fromisoformat(c.day)) is not None
        ]
        cands.sort(key=lambda c: (c.scene_cloud, c.day))
        if col["status"][i] != "ok" and "WorldCover" in str(col["reason"][i]):
            scored = []  # WorldCover failed the patch before any Sentinel-2 read
        elif chosen and col["cloud_fraction"][i] == 0 and col["nodata_fraction"][i] == 0:
            at = next(n for n, c in enumerate(cands) if list(c.ids) == chosen)
            scored = cands[: at + 1]  # scoring stops at the first perfect day
        else:
            scored = cands
        plan.append(
            {
                "key": key,
                "scl": [i for c in scored for i in c.ids],
                "bands": chosen,
                "wc": wc_ids,
                "ok": col["status"][i] == "ok",
            }
        )
    return plan


def _odc_shard(
    patches: list[dict[str, Any]],
    items: dict[str, Item],
    bands: tuple[str, ...],
    res: str,
    pool: int,
) -> list[float]:
    """Runs on a worker: odc-stac loads of each patch, one patch after another. Returns the
    seconds of each patch's bands load."""
    import odc.stac
    import pystac

    odc.stac.configure_rio(cloud_defaults=True)
    stac = {k: pystac.Item.from_dict(v) for k, v in items.items()}
    times = []
    for p in patches:
        gbox = p["key"].geobox

        def load(ids: list[str], names: list[str], resampling: str, gbox: Any = gbox) -> None:
            if ids:
                odc.stac.load(
                    [stac[i] for i in ids],
                    bands=names,
                    geobox=gbox,
                    resampling=resampling,
                    groupby="solar_day",
                    chunks=None,
                    pool=pool,
                )

        load(p["scl"], ["scl"], "nearest")
        t0 = time.perf_counter()
        load(p["bands"], list(bands), res)
        times.append(time.perf_counter() - t0)
        load(p["wc"], ["map"], "nearest")
    return times


def _run_odc(
    world: Path,
    manifest: dict[str, Any],
    latency: float,
    pool: int,
    client: Client,
    plan: list[dict[str, Any]],
    workers: int,
) -> dict[str, Any]:
    cfg = RunConfig()
    with (
        serve_files(world, ServeOptions(latency=latency)) as fs,
        serve_world(world, files_url=fs.url) as apis,
    ):
        _, s2, wc = _inputs(apis, manifest)  # this server's hrefs
        by_id = {i["id"]: i for i in s2 + wc}
        tasks = []
        for a in range(0, len(plan), SHARD):
            part = plan[a : a + SHARD]
            ids = {i for p in part for i in p["scl"] + p["bands"] + p["wc"]}
            tasks.append((part, {i: by_id[i] for i in ids}))
        fs.log.clear()
        t0 = time.perf_counter()
        futs = [
            client.submit(
                _odc_shard, part, its, cfg.ingest.bands, cfg.ingest.resampling, pool, pure=False
            )
            for part, its in tasks
        ]
        band_times = [t for f in futs for t in f.result()]
        seconds = time.perf_counter() - t0
        traffic = _traffic(fs)
    return {
        "seconds": seconds,
        "bands_seconds": sum(band_times) / workers,
        "n": len(plan),
        "traffic": traffic,
    }


def _per_patch(traffic: dict[str, tuple[int, int]], n: int, kinds: tuple[str, ...] = KINDS) -> str:
    req = sum(traffic[k][0] for k in kinds) / n
    mib = sum(traffic[k][1] for k in kinds) / n / 2**20
    return f"{req:5.1f} req {mib:5.2f} MiB"


def _split(traffic: dict[str, tuple[int, int]], n: int) -> str:
    return ", ".join(f"{k} {traffic[k][0] / n:.1f}" for k in KINDS)


def main() -> None:
    world, manifest = bench_world()
    work = Path(tempfile.mkdtemp(prefix="cen-bench-ingest-odc-"))
    rows = []
    plan: list[dict[str, Any]] | None = None
    for workers in WORKERS:
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0") as lc,
            Client(lc) as client,
        ):
            # Every patch of the world once: imports, page cache, and which patches get read.
            warm = _run_ours(world, manifest, 0.0, 1, client, work / "plan")
            if plan is None:
                every = _plan(warm, str(work / "plan" / "dataset.zarr"))
                plan = ([p for p in every if p["ok"]] or every)[:PATCHES]
                print(
                    f"{len(plan)} patches: the first ok ones of the {len(every)} covering the "
                    f"world ({sum(p['ok'] for p in every)} ok); per patch odc-stac loads "
                    f"{sum(len(p['scl']) for p in plan) / len(plan):.2f} SCL items, "
                    f"{sum(len(p['bands']) for p in plan) / len(plan):.2f} band items, "
                    f"{sum(len(p['wc']) for p in plan) / len(plan):.2f} WorldCover items"
                )
            ids = [p["key"].id for p in plan]
            _run_odc(world, manifest, 0.0, 4, client, plan[:SHARD], workers)  # imports
            for latency in LATENCIES:
                ms = f"{latency * 1000:.0f} ms"
                ours = {}
                for io in CONCURRENCY:
                    r = ours[io] = _run_ours(
                        world, manifest, latency, io, client, work / "run", ids
                    )
                    print(
                        f"ours     {ms:>5}, {workers} worker(s), io_concurrency {io:2d}: "
                        f"{r['n'] / r['seconds']:6.2f} patches/s; "
                        f"{_per_patch(r['traffic'], r['n'])} per patch "
                        f"({_split(r['traffic'], r['n'])} req)",
                        flush=True,
                    )
                odc = {}
                for pool in POOLS:
                    r = odc[pool] = _run_odc(world, manifest, latency, pool, client, plan, workers)
                    print(
                        f"odc-stac {ms:>5}, {workers} worker(s), pool {pool:2d}: "
                        f"{r['n'] / r['seconds']:6.2f} patches/s everything, "
                        f"{r['n'] / r['bands_seconds']:6.2f} bands only; "
                        f"{_per_patch(r['traffic'], r['n'])} per patch "
                        f"({_split(r['traffic'], r['n'])} req)",
                        flush=True,
                    )
                bo = min(ours, key=lambda k: ours[k]["seconds"])
                be = min(odc, key=lambda k: odc[k]["seconds"])
                bb = min(odc, key=lambda k: odc[k]["bands_seconds"])
                rows.append((workers, latency, ours[bo], bo, odc[be], be, odc[bb], bb))
    shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        "workers latency | ours p/s (io) | odc-stac everything p/s (pool) | odc-stac bands only "
        "p/s (pool) | ours/odc everything | ours/odc bands only"
    )
    for workers, latency, o, bo, e, be, b, bb in rows:
        po, pe, pb = o["n"] / o["seconds"], e["n"] / e["seconds"], b["n"] / b["bands_seconds"]
        vs = f"x{po / pe:.2f}"
        print(
            f"{workers:7d} {latency * 1000:5.0f} ms | {po:7.2f} ({bo:2d}) | "
            f"{pe:24.2f} ({be:2d}) | {pb:24.2f} ({bb:2d}) | {vs:>19} | x{po / pb:.2f}"
        )
    print()
    print("HTTP per patch at the best settings: ours | odc-stac everything | odc-stac bands")
    for workers, latency, o, _, e, _, b, _ in rows:
        print(
            f"{workers:7d} {latency * 1000:5.0f} ms | {_per_patch(o['traffic'], o['n'])} | "
            f"{_per_patch(e['traffic'], e['n'])} | "
            f"{_per_patch(b['traffic'], b['n'], ('bands',))}"
        )


if __name__ == "__main__":
    main()
