"""Stage *ingest*: Sentinel-2 and WorldCover onto every planned patch, into one Zarr store.

One Dask task per shard of ``ingest.shard_patches`` consecutive plan rows (the plan orders
patches so that neighbours share a shard, hence files and file handles). A task chooses a scene
per patch, reads it, maps WorldCover to ChatEarthNet classes and writes its whole shard. The
graph grows with shards, not pixels. Re-running skips shards marked done; failures a run
tolerates are stored per patch in the store itself, so a killed run loses none of them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from distributed import Client, as_completed, span

from cenlib.classes import worldcover_to_index
from cenlib.config import RunConfig, TimeConfig
from cenlib.grid import PatchKey
from cenlib.ingest.read import AssetReadError, AssetRef, Readers, read_onto
from cenlib.ingest.scenes import (
    REFL_NODATA,
    Item,
    Signer,
    asset_ref,
    band_key,
    candidates,
    choose,
    negative_dark_share,
    reflectance,
)
from cenlib.ingest.store import (
    F32_FIELDS,
    F64_FIELDS,
    STR_FIELDS,
    ShardData,
    StoreSpec,
    array,
    create_or_open,
    done_shards,
    open_group,
    write_shard,
)
from cenlib.io import stable_hash
from cenlib.search import SearchSummary
from cenlib.summary import Summary


@dataclass(frozen=True)
class IngestSummary(Summary):
    store: str
    patches: int
    shards: int
    shards_skipped: int
    shards_written: int
    ok: int
    failed: int
    bytes_written: int
    seconds: float
    failure_rows: int = 0
    retries: int = 0  # opens and reads that failed and were tried again (then read or not)
    resigns: int = 0  # opens and reads refused for an expired signature, re-signed and redone
    preview: str = ""
    search: SearchSummary | None = None  # the search the entry ran first (own summary line)

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d.pop("search")
        return d

    def line(self) -> str:
        return (
            f"ingest: {self.ok} patches ok, {self.failed} failed of {self.patches}; shards "
            f"{self.shards_written} written, {self.shards_skipped} already done; "
            f"{self.bytes_written / 2**20:.1f} MiB in {self.seconds} s; "
            f"{self.failure_rows} rows in failures.jsonl"
            + (f"; {self.retries} reads retried" if self.retries else "")
            + (f"; {self.resigns} reads re-signed" if self.resigns else "")
        )


SUSPECT_NEGATIVE = 0.5  # share of the darkest pixels below -0.02 that flags a scene's offset


@dataclass(frozen=True)
class IngestParams:
    bands: tuple[str, ...]
    resampling: str
    max_cloud: float  # 0..1
    max_nodata: float  # 0..1
    min_wc_valid: float  # 0..1
    sign_s2: str  # "none" or "planetary-computer"
    sign_wc: str
    time: TimeConfig  # its named seasons, if any, restrict the days a patch may use


@dataclass(frozen=True)
class ShardTask:
    """Plain data for one task: its patches, the items they need (each once) and where to write."""

    index: int
    start: int
    keys: tuple[PatchKey, ...]
    items: tuple[Item, ...]
    s2: tuple[tuple[int, ...], ...]  # per patch: indices into items
    wc: tuple[tuple[int, ...], ...]
    url: str
    params: IngestParams
    io_concurrency: int = 1  # patches read at once (threads; GDAL releases the GIL)


@functools.cache  # looked up once per process, not per patch
def signer(kind: str) -> Signer:
    """Signs hrefs just before they are read, so tokens are fresh however long a run takes."""
    if kind == "planetary-computer":
        import planetary_computer

        sign: Signer = planetary_computer.sign_url
        return sign
    return lambda href: href


@dataclass
class PatchOut:
    refl: npt.NDArray[np.int16]
    land_cover: npt.NDArray[np.uint8]
    scl: npt.NDArray[np.uint8]
    fields: dict[str, Any]


def _issue(e: AssetReadError) -> dict[str, str]:
    return {"item_id": e.item_id, "asset": e.asset, "href": e.href, "reason": e.reason}


def ingest_patch(
    readers: Readers, key: PatchKey, s2: list[Item], wc: list[Item], p: IngestParams
) -> PatchOut:
    """Choose, read and check one patch. Never raises for a tolerated failure: it reports it."""
    gbox = key.geobox
    n = key.size
    out = PatchOut(
        np.full((len(p.bands), n, n), REFL_NODATA, np.int16),
        np.zeros((n, n), np.uint8),
        np.zeros((n, n), np.uint8),
        {"status": "failed", "reason": "", "s2_items": "", "wc_items": "", "datetime": None},
    )
    issues: list[dict[str, str]] = []
    sign, sign_wc = signer(p.sign_s2), signer(p.sign_wc)
    codes = np.zeros((n, n), np.uint8)
    for it in wc:
        ref = asset_ref(it, "map", sign_wc)
        if ref is None:  # a catalogue's item without its map: recorded, the patch goes on
            has = sorted(it.get("assets", {}))
            why = f"WorldCover item has no asset 'map' (it has {has})"
            issues.append({"item_id": str(it["id"]), "asset": "map", "href": "", "reason": why})
            continue
        try:
            a = read_onto(readers, ref, gbox, "nearest", 0)
        except AssetReadError as e:
            issues.append(_issue(e))
            continue
        if a is not None:
            fill = (codes == 0) & (a != 0)
            codes[fill] = a[fill]
    valid = float((codes != 0).mean())
    out.fields["wc_items"] = ",".join(i["id"] for i in wc)
    out.fields["wc_valid_fraction"] = valid
    out.land_cover = worldcover_to_index(codes)
    if not wc:
        out.fields["reason"] = "no WorldCover item covers the patch"
    elif valid < p.min_wc_valid:
        out.fields["reason"] = (
            f"WorldCover has data on {100 * valid:.1f}% of the patch, under "
            f"thresholds.min_valid_fraction ({100 * p.min_wc_valid:g}%)"
        )
    else:
        every = candidates(s2)
        cands = [c for c in every if p.time.season_of(dt.date.fromisoformat(c.day)) is not None]
        if not every:
            out.fields["reason"] = "no Sentinel-2 item covers the patch in the time window"
        elif not cands:
            out.fields["reason"] = (
                f"none of the {len(every)} Sentinel-2 day(s) over the patch falls in the seasons "
                f"{sorted(p.time.seasons)}; widen time.seasons or the time window"
            )
        while cands:
            choice = choose(readers, cands, gbox, p.max_cloud, p.max_nodata, sign)
            issues.extend(_issue(e) for e in choice.errors)
            out.fields["reason"] = choice.reason
            if choice.candidate is None or choice.scl is None:
                break
            cand = choice.candidate
            try:
                out.refl = reflectance(readers, cand, p.bands, gbox, p.resampling, sign)
            except AssetReadError as e:
                # Tolerated: recorded, and the next best day gets its chance.
                issues.append(_issue(e))
                cands = [c for c in cands if c.day != cand.day]
                continue
            out.scl = choice.scl
            out.fields.update(
                status="ok",
                season=p.time.season_of(dt.date.fromisoformat(cand.day)) or "",
                s2_items=",".join(cand.ids),
                datetime=cand.datetime,
                cloud_fraction=choice.cloud,
                nodata_fraction=choice.nodata,
            )
            share = negative_dark_share(out.refl)
            if share > SUSPECT_NEGATIVE:
                issues.append(
                    {
                        "item_id": ",".join(cand.ids),
                        "asset": ",".join(p.bands),
                        "href": "",
                        "reason": (
                            f"suspect reflectance offset: {100 * share:.0f}% of the darkest "
                            "pixels are below -0.02; check earthsearch:boa_offset_applied, "
                            "raster:bands offset and s2:processing_baseline"
                        ),
                    }
                )
            break
        if out.fields["status"] != "ok" and not out.fields["reason"]:
            out.fields["reason"] = "every candidate day had an unreadable asset (see its issues)"
    out.fields["issues"] = json.dumps(issues) if issues else ""
    return out


@dataclass(frozen=True)
class ReadCounts:
    """Opens and reads that were tried again: after a failure (retries) or after signing their
    href afresh (re-signs)."""

    retries: int = 0
    resigns: int = 0

    @staticmethod
    def of(readers: Readers) -> ReadCounts:
        return ReadCounts(sum(readers.retries.values()), sum(readers.resigns.values()))

    def __add__(self, other: ReadCounts) -> ReadCounts:
        return ReadCounts(self.retries + other.retries, self.resigns + other.resigns)


def _ingest_run(
    task: ShardTask, rows: range, pool: ThreadPoolExecutor | None = None
) -> tuple[list[PatchOut], ReadCounts]:
    """Patches ``rows`` of the shard one after another, with one set of open files (a patch's
    bands read at once in `pool`, when given); and how many opens and reads had to be tried
    again."""
    with Readers(pool=pool) as readers:
        outs = [
            ingest_patch(
                readers,
                task.keys[i],
                [task.items[j] for j in task.s2[i]],
                [task.items[j] for j in task.wc[i]],
                task.params,
            )
            for i in rows
        ]
        return outs, ReadCounts.of(readers)


def _remote(items: tuple[Item, ...]) -> bool:
    return any(
        str(a.get("href", "")).startswith(("http://", "https://"))
        for it in items
        for a in it.get("assets", {}).values()
    )


def _first_reads(task: ShardTask) -> list[AssetRef]:
    """What every patch of the shard reads first: the SCL of each Sentinel-2 item (scene
    choice) and each WorldCover map."""
    sign, sign_wc = signer(task.params.sign_s2), signer(task.params.sign_wc)
    s2 = [task.items[j] for j in sorted({j for js in task.s2 for j in js})]
    wc = [task.items[j] for j in sorted({j for js in task.wc for j in js})]
    refs = [asset_ref(it, band_key(it, "scl"), sign) for it in s2]
    refs += [asset_ref(it, "map", sign_wc) for it in wc]
    return [r for r in refs if r is not None]


def _open_once(ref: AssetRef) -> ReadCounts:
    """Open and close: the COG's header lands in GDAL's process-wide /vsicurl/ cache, so the
    patches' own opens of it cost no request. A failure is left to the patch that reads it."""
    with Readers() as readers:
        with contextlib.suppress(AssetReadError):
            readers.dataset(ref)
        return ReadCounts.of(readers)


def read_patches(task: ShardTask) -> tuple[list[PatchOut], ReadCounts]:
    """Every patch of the shard, in order. When its assets are on HTTP(S), ``io_concurrency``
    runs of neighbouring patches are read at once in threads (each with its own open datasets:
    a rasterio handle is not shared between threads), so one patch's waits for the network
    overlap another's; and the chosen day's bands of a patch are opened and read at once, in
    a second pool of ``io_concurrency`` threads that the runs share. The result does not depend
    on the concurrency: each patch is read by itself, its bands in their order."""
    n = len(task.keys)
    remote = _remote(task.items) and task.io_concurrency > 1
    # Local files do not wait on a network: threads would only contend for the cores.
    k = max(1, min(task.io_concurrency, n)) if remote else 1
    with contextlib.ExitStack() as stack:
        bands = None
        if remote:
            bands = stack.enter_context(
                ThreadPoolExecutor(task.io_concurrency, thread_name_prefix=f"bands-{task.index}")
            )
        if k == 1:
            return _ingest_run(task, range(n), bands)
        bounds = [round(i * n / k) for i in range(k + 1)]
        runs = [range(a, b) for a, b in itertools.pairwise(bounds)]
        pool = stack.enter_context(ThreadPoolExecutor(k, thread_name_prefix=f"ingest-{task.index}"))
        # The headers every patch needs, k at a time, before the patches queue for them.
        first = sum(pool.map(_open_once, _first_reads(task)), ReadCounts())
        parts = list(pool.map(lambda r: _ingest_run(task, r, bands), runs))
        return [o for outs, _ in parts for o in outs], sum((c for _, c in parts), first)


def ingest_shard(task: ShardTask) -> dict[str, Any]:
    """Runs on a worker: every patch of one shard, then one whole-shard write."""
    t0 = time.perf_counter()
    outs, counts = read_patches(task)
    fields: dict[str, npt.NDArray[Any]] = {}
    for name in STR_FIELDS:
        fields[name] = np.array([str(o.fields.get(name, "")) for o in outs], dtype=object)
    fields["patch_id"] = np.array([k.id for k in task.keys], dtype=object)
    fields["grid"] = np.array([k.grid for k in task.keys], dtype=object)
    fields["tile"] = np.array([k.tile for k in task.keys], dtype=object)
    fields["crs"] = np.array([str(k.crs) for k in task.keys], dtype=object)
    centers = np.array([k.center_lonlat() for k in task.keys], dtype=np.float64)
    fields["center_lon"], fields["center_lat"] = centers[:, 0], centers[:, 1]
    fields["transform"] = np.array([tuple(k.geobox.affine)[:6] for k in task.keys], np.float64)
    fields["datetime"] = np.array(
        [
            np.datetime64(str(o.fields["datetime"]).rstrip("Z"), "ns")
            if o.fields["datetime"]
            else np.datetime64("NaT", "ns")
            for o in outs
        ]
    )
    for name in F32_FIELDS:
        fields[name] = np.array([o.fields.get(name, np.nan) for o in outs], np.float32)
    assert set(F64_FIELDS) <= set(fields)
    nbytes = write_shard(
        task.url,
        task.index,
        ShardData(
            task.start,
            np.stack([o.refl for o in outs]),
            np.stack([o.land_cover for o in outs]),
            np.stack([o.scl for o in outs]),
            fields,
        ),
    )
    return {
        "shard": task.index,
        "patches": len(outs),
        "ok": sum(o.fields["status"] == "ok" for o in outs),
        "bytes": nbytes,
        "seconds": time.perf_counter() - t0,
        "retries": counts.retries,
        "resigns": counts.resigns,
    }


def outlines(keys: list[PatchKey]) -> list[shapely.Geometry]:
    """Each patch's outline in EPSG:4326, as shapely polygons (work them out once per run)."""
    return [shapely.geometry.shape(k.lonlat_polygon().json) for k in keys]


def assign(
    keys: list[PatchKey], items: list[Item], polys: list[shapely.Geometry] | None = None
) -> list[tuple[int, ...]]:
    """For each patch, the indices of the items whose footprint meets the patch (`polys`: the
    patches' :func:`outlines`, when already known)."""
    if not items:
        return [() for _ in keys]
    tree = shapely.STRtree([shapely.geometry.shape(i["geometry"]) for i in items])
    patch, item = tree.query(outlines(keys) if polys is None else polys, predicate="intersects")
    out: list[list[int]] = [[] for _ in keys]
    for p, i in zip(patch.tolist(), item.tolist(), strict=True):
        out[p].append(i)
    return [tuple(sorted(x)) for x in out]


def params_from(cfg: RunConfig) -> IngestParams:
    def kind(on: bool) -> str:
        return "planetary-computer" if on else "none"

    return IngestParams(
        bands=cfg.ingest.bands,
        resampling=cfg.ingest.resampling,
        max_cloud=cfg.thresholds.max_patch_cloud / 100,
        max_nodata=cfg.thresholds.max_patch_nodata / 100,
        min_wc_valid=cfg.thresholds.min_valid_fraction,
        sign_s2=kind(cfg.sources.sentinel2.sign),
        sign_wc=kind(cfg.sources.worldcover.sign),
        time=cfg.time,
    )


def store_url(cfg: RunConfig) -> str:
    return cfg.ingest.store or str(cfg.output / "dataset.zarr")


# Config fields that say where a run wrote and which cluster ran it, not what it made.
_WHERE: dict[str, Any] = {"cluster": True, "output": True, "ingest": {"store"}}


def provenance(cfg: RunConfig, urls: dict[str, str]) -> dict[str, Any]:
    versions = {}
    for pkg in ("cenlib", "zarr", "numpy", "rasterio", "odc-geo", "pystac-client", "dask"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "unknown"
    # A source served from the synthetic world is named by the world, not by the loopback port
    # it happened to be served on this time: that URL is dead once the run ends, and would make
    # the dataset (card, STAC links) differ from one run of the same config to the next.
    world = f"world (preset {cfg.world.preset}, seed {cfg.world.seed})"
    return {
        "title": f"ChatEarthNet-style patches: {cfg.name}",
        "sources": {
            name: {
                "api": world if sc.api == "world" else urls.get(name, sc.api),
                "collection": sc.collection,
                "dialect": sc.dialect,
            }
            for name, sc in (
                ("sentinel2", cfg.sources.sentinel2),
                ("worldcover", cfg.sources.worldcover),
            )
        },
        "software": versions,
        "config_hash": stable_hash(cfg.model_dump(mode="json", exclude=_WHERE))[:16],
    }


def _localise(
    used: dict[tuple[str, int], int],
    items: list[Item],
    src: str,
    idx: tuple[int, ...],
    pool: list[Item],
) -> tuple[int, ...]:
    """Indices into a shard's own item list, adding each item the first time it is used."""
    res = []
    for j in idx:
        if (src, j) not in used:
            used[(src, j)] = len(items)
            items.append(pool[j])
        res.append(used[(src, j)])
    return tuple(res)


def make_tasks(
    keys: list[PatchKey],
    s2_items: list[Item],
    wc_items: list[Item],
    spec: StoreSpec,
    p: IngestParams,
    io_concurrency: int = 1,
) -> list[ShardTask]:
    polys = outlines(keys)
    s2_of, wc_of = assign(keys, s2_items, polys), assign(keys, wc_items, polys)
    tasks = []
    for i in range(spec.n_shards):
        a, b = spec.shard_range(i)
        used: dict[tuple[str, int], int] = {}
        items: list[Item] = []
        s2 = tuple(_localise(used, items, "s2", s2_of[k], s2_items) for k in range(a, b))
        wc = tuple(_localise(used, items, "wc", wc_of[k], wc_items) for k in range(a, b))
        tasks.append(
            ShardTask(i, a, tuple(keys[a:b]), tuple(items), s2, wc, spec.url, p, io_concurrency)
        )
    return tasks


def ingest_patches(
    cfg: RunConfig,
    keys: list[PatchKey],
    s2_items: list[Item],
    wc_items: list[Item],
    urls: dict[str, str],
    client: Client,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> IngestSummary:
    """Ingest the patches ``keys`` from these items (skipping shards already done)."""
    p = params_from(cfg)
    url = store_url(cfg)
    fp = stable_hash(
        [k.id for k in keys],
        sorted(i["id"] for i in s2_items),
        sorted(i["id"] for i in wc_items),
        p.__dict__,
        cfg.ingest.shard_patches,
        cfg.grid.model_dump(mode="json"),
    )
    spec = StoreSpec(url, len(keys), cfg.ingest.shard_patches, p.bands, cfg.grid.patch_size, fp)
    g, created = create_or_open(spec, provenance(cfg, urls), cfg.ingest.replace_foreign)
    done = set() if created else done_shards(g)
    tasks = make_tasks(keys, s2_items, wc_items, spec, p, cfg.ingest.io_concurrency)
    tasks = [t for t in tasks if t.index not in done]
    if on_start:
        on_start(spec.n_shards, len(done))
    t0 = time.perf_counter()
    results = []
    with span("ingest"):
        futures = [
            client.submit(ingest_shard, t, key=f"ingest-shard-{t.index:05d}-{fp[:8]}", pure=False)
            for t in tasks
        ]
        for fut in as_completed(futures):
            r = fut.result()
            results.append(r)
            if on_done:
                on_done(r)
    seconds = time.perf_counter() - t0
    ok = sum(r["ok"] for r in results)
    if done:  # the shards written before: their patches' status is in the store
        status = np.asarray(array(open_group(url), "status")[:])
        rows = np.concatenate([np.arange(*spec.shard_range(i)) for i in sorted(done)])
        ok += int((status[rows] == "ok").sum())
    return IngestSummary(
        store=url,
        patches=len(keys),
        shards=spec.n_shards,
        shards_skipped=len(done),
        shards_written=len(results),
        ok=ok,
        failed=len(keys) - ok,
        bytes_written=sum(r["bytes"] for r in results),
        retries=sum(r.get("retries", 0) for r in results),
        resigns=sum(r.get("resigns", 0) for r in results),
        seconds=round(seconds, 2),
    )


def failure_rows(url: str) -> list[dict[str, Any]]:
    """The failures table of a store: one row per failed patch and per tolerated asset error."""
    g = open_group(url)
    ids = np.asarray(array(g, "patch_id")[:])
    status = np.asarray(array(g, "status")[:])
    reason = np.asarray(array(g, "reason")[:])
    issues = np.asarray(array(g, "issues")[:])
    rows: list[dict[str, Any]] = []
    for pid, st, why, iss in zip(ids, status, reason, issues, strict=True):
        for rec in json.loads(str(iss)) if iss else []:
            rows.append({"stage": "ingest", "patch_id": str(pid), **rec})
        if st == "failed":
            rows.append(
                {
                    "stage": "ingest",
                    "patch_id": str(pid),
                    "item_id": "",
                    "asset": "",
                    "href": "",
                    "reason": str(why),
                }
            )
    return rows
