"""Stage ingest on the synthetic world: scene choice, reads, the store, failures, resume."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml
import zarr
from _support import cen_process, warped_read
from distributed import Client, LocalCluster
from rasterio.warp import Resampling

from cenlib.classes import worldcover_to_index
from cenlib.config import RunConfig, parse_config
from cenlib.grid import Grid
from cenlib.ingest.stage import failure_rows, ingest_patches
from cenlib.ingest.store import StoreError, done_shards, open_group
from cenlib.stac.search import SearchRequest, search

REPO = Path(__file__).resolve().parents[2]
DOLOMITES = (11.97, 46.56, 12.03, 46.61)  # straddles UTM zones 32/33 (tiles 32TQS, 33TTM)
SAO_LUIS = (-44.39, -2.61, -44.33, -2.55)  # southern hemisphere, zone 23 south
Items = list[dict[str, Any]]


def _items(apis: dict[str, str], bbox: tuple[float, float, float, float]) -> tuple[Items, Items]:
    cfg = RunConfig()
    s2 = search(SearchRequest(apis["earth-search"], "sentinel-2-l2a", bbox, cfg.time.interval))
    wc = search(SearchRequest(apis["planetary-computer"], "esa-worldcover", bbox))
    return [i.to_dict() for i in s2.items], [i.to_dict() for i in wc.items]


def _cfg(tmp: Path, **over: Any) -> RunConfig:
    data: dict[str, Any] = {"output": str(tmp / "run"), "ingest": {"shard_patches": 4}}
    data.update(over)
    return parse_config(data)


def _href(item: dict[str, Any], key: str) -> str:
    return str(item["assets"][key]["href"])


def test_scene_choice_mosaic_and_independent_read(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    s2, wc = _items(world_apis, DOLOMITES)
    keys = list(Grid().covering(DOLOMITES))
    cfg = _cfg(tmp_path)
    summary = ingest_patches(cfg, keys, s2, wc, world_apis, dask_client)
    assert summary["shards_written"] == summary["shards"] == -(-len(keys) // 4)
    ds = xr.open_zarr(summary["store"], consolidated=False)
    ok = ds.status.values == "ok"
    assert ok.sum() >= len(keys) // 2
    # One day mosaics both zones' tiles where a patch straddles them, with no gap.
    two = [i for i, v in enumerate(ds.s2_items.values) if ok[i] and "32TQS" in v and "33TTM" in v]
    assert two, "no patch straddles the zone boundary"
    assert np.isfinite(ds.reflectance.values[two]).all()  # decoded: no-data would be NaN
    by_id = {i["id"]: i for i in s2}
    days: dict[str, list[dict[str, Any]]] = {}
    for it in s2:
        days.setdefault(it["properties"]["datetime"][:10], []).append(it)
    for p in np.flatnonzero(ok)[:6]:
        key = keys[p]
        # The chosen day is the least cloudy over the patch, by an independent SCL read.
        cloud = {}
        for day, its in days.items():
            scl = np.zeros((256, 256), np.uint8)
            for it in sorted(its, key=lambda i: i["id"]):
                a = warped_read(_href(it, "scl"), key, Resampling.nearest)
                scl = np.where(scl == 0, a, scl)
            cloud[day] = np.isin(scl, [3, 8, 9, 10]).mean()
        chosen = str(ds.datetime.values[p])[:10]
        assert cloud[chosen] == pytest.approx(float(ds.cloud_fraction.values[p]), abs=0.002)
        assert cloud[chosen] <= min(cloud.values()) + 0.002
        # Class fractions and RGB agree with GDAL's warped read within 0.5 percentage points.
        codes = np.zeros((256, 256), np.uint8)
        for it in wc:  # the area straddles two WorldCover tiles too
            a = warped_read(_href(it, "map"), key, Resampling.nearest)
            codes = np.where(codes == 0, a, codes)
        ref_lc = np.bincount(worldcover_to_index(codes).ravel(), minlength=12) / codes.size
        got_lc = np.bincount(ds.land_cover.values[p].ravel(), minlength=12) / codes.size
        assert np.abs(ref_lc - got_lc).max() <= 0.005
        items = [by_id[i] for i in str(ds.s2_items.values[p]).split(",")]
        if len(items) == 1:
            for b, band in enumerate(("blue", "green", "red")):
                dn = warped_read(_href(items[0], band), key, Resampling.bilinear).astype(float)
                ref = dn[dn > 0] * 1e-4 - 0.1
                got = ds.reflectance.values[p, b][dn > 0]  # decoded by scale_factor
                assert 0.01 < ref.mean() < 0.3
                assert abs(ref.mean() - got.mean()) <= 0.005
                assert np.abs(ref - got).mean() <= 0.005
    # Re-running skips every shard and changes nothing.
    again = ingest_patches(cfg, keys, s2, wc, world_apis, dask_client)
    assert again["shards_skipped"] == summary["shards"] and again["shards_written"] == 0
    assert (again["ok"], again["failed"]) == (summary["ok"], summary["failed"])  # from the store


def test_utm_grid_southern_hemisphere_is_a_plain_paste(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    s2, wc = _items(world_apis, SAO_LUIS)
    grid = Grid("utm")
    keys = list(grid.covering(SAO_LUIS))
    assert keys and all(k.zone == 32723 for k in keys)
    summary = ingest_patches(
        _cfg(tmp_path, grid={"kind": "utm"}), keys, s2, wc, world_apis, dask_client
    )
    ds = xr.open_zarr(summary["store"], consolidated=False)
    ok = np.flatnonzero(ds.status.values == "ok")
    assert len(ok) >= 1
    by_id = {i["id"]: i for i in s2}
    p = int(ok[0])
    (item,) = [by_id[i] for i in str(ds.s2_items.values[p]).split(",")]
    g = keys[p].geobox
    with rasterio.open(_href(item, "red")) as src:
        win = rasterio.windows.from_bounds(*g.boundingbox, transform=src.transform)
        dn = src.read(1, window=win.round_offsets().round_lengths())
    # Same 10 m grid: the stored value is the DN minus the +1000 offset, pixel for pixel.
    stored = np.asarray(open_group(summary["store"])["reflectance"][p, 2])  # raw int16
    assert np.array_equal(stored[dn > 0], dn[dn > 0].astype(np.int16) - 1000)


def test_tolerated_failures_name_item_asset_href(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    s2, wc = _items(world_apis, DOLOMITES)
    keys = list(Grid().covering(DOLOMITES))[8:16]
    broken = json.loads(json.dumps(s2))
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 not a tiff")
    # The clearest day has a corrupt red band (chosen, then unreadable: the next day is tried);
    # every other day has lost its SCL file.
    clearest = min(broken, key=lambda i: i["properties"]["eo:cloud_cover"])
    day = clearest["properties"]["datetime"][:10]
    for it in broken:
        if it["properties"]["datetime"][:10] == day:
            it["assets"]["red"]["href"] = str(corrupt)
        else:
            it["assets"]["scl"]["href"] = str(tmp_path / "missing" / "SCL.tif")
    summary = ingest_patches(_cfg(tmp_path), keys, broken, wc, world_apis, dask_client)
    assert summary["ok"] + summary["failed"] == len(keys)
    rows = failure_rows(summary["store"])
    assert summary["ok"] == 0 and {r["patch_id"] for r in rows} >= {k.id for k in keys}
    missing = [r for r in rows if r["asset"] == "scl"]
    assert missing and all("missing/SCL.tif" in r["href"] and r["item_id"] for r in missing)
    assert all("cannot open" in r["reason"] for r in missing)
    bad = [r for r in rows if r["asset"] == "red"]
    assert bad and all(r["href"] == str(corrupt) for r in bad)


def test_a_worldcover_item_without_its_map_is_recorded(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    s2, wc = _items(world_apis, DOLOMITES)
    keys = list(Grid().covering(DOLOMITES))[8:10]
    bare = json.loads(json.dumps(wc))
    for it in bare:
        it["assets"]["data"] = it["assets"].pop("map")
    summary = ingest_patches(_cfg(tmp_path), keys, s2, bare, world_apis, dask_client)
    assert summary["failed"] == len(keys) and summary["ok"] == 0
    rows = [r for r in failure_rows(summary["store"]) if r["asset"] == "map"]
    assert {r["patch_id"] for r in rows} == {k.id for k in keys}
    assert all("has no asset 'map'" in r["reason"] and "'data'" in r["reason"] for r in rows)
    assert {r["item_id"] for r in rows} <= {it["id"] for it in wc}


def test_http_404_is_recorded(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    """A real HTTP server on loopback that has not got the file: GDAL sees a 404."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s2, wc = _items(world_apis, DOLOMITES)
        keys = list(Grid().covering(DOLOMITES))[8:10]
        gone = json.loads(json.dumps(wc))
        url = f"http://127.0.0.1:{server.server_address[1]}/gone/ESA_WorldCover_Map.tif"
        for it in gone:
            it["assets"]["map"]["href"] = url
        summary = ingest_patches(_cfg(tmp_path), keys, s2, gone, world_apis, dask_client)
    finally:
        server.shutdown()
    assert summary["failed"] == len(keys)
    rows = failure_rows(summary["store"])
    http_rows = [r for r in rows if r["asset"] == "map"]
    assert {r["patch_id"] for r in http_rows} == {k.id for k in keys}
    assert all(r["href"] == url and "404" in r["reason"] for r in http_rows)
    assert all(r["item_id"].startswith("ESA_WorldCover") for r in http_rows)


def test_store_urls_and_foreign_store(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    s2, wc = _items(world_apis, DOLOMITES)
    keys = list(Grid().covering(DOLOMITES))[:6]
    url = (tmp_path / "via-fsspec.zarr").as_uri()
    a = ingest_patches(_cfg(tmp_path, ingest={"store": url}), keys, s2, wc, world_apis, dask_client)
    b = ingest_patches(_cfg(tmp_path), keys, s2, wc, world_apis, dask_client)
    ga, gb = open_group(url), open_group(b["store"])
    for name in ("reflectance", "land_cover", "scl", "patch_id", "datetime"):
        assert np.array_equal(np.asarray(ga[name][:]), np.asarray(gb[name][:])), name
    assert a["ok"] == b["ok"] > 0
    # An in-memory object store, on an in-process cluster (memory:// is per process).
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as lc,
        Client(lc) as local,
    ):
        m = ingest_patches(
            _cfg(tmp_path, ingest={"store": "memory://cen/test.zarr"}),
            keys,
            s2,
            wc,
            world_apis,
            local,
        )
        gm = open_group("memory://cen/test.zarr")
        assert m["ok"] == a["ok"]
        assert np.array_equal(np.asarray(gm["reflectance"][:]), np.asarray(ga["reflectance"][:]))
    # A store of another plan is refused, not mixed.
    with pytest.raises(StoreError, match="another plan or configuration"):
        ingest_patches(
            _cfg(tmp_path, ingest={"store": url}), keys[:3], s2, wc, world_apis, dask_client
        )
    # ... unless asked to replace it, and only when it is a store of ours.
    cfg = _cfg(tmp_path, ingest={"store": url, "replace_foreign": True})
    assert ingest_patches(cfg, keys[:3], s2, wc, world_apis, dask_client)["patches"] == 3
    other = tmp_path / "not-ours.zarr"
    zarr.open_group(str(other), mode="w").attrs["fingerprint"] = "x"
    cfg = _cfg(tmp_path, ingest={"store": str(other), "replace_foreign": True})
    with pytest.raises(StoreError, match="another plan"):
        ingest_patches(cfg, keys[:3], s2, wc, world_apis, dask_client)


def _job_config(tmp: Path, demo_world: Path, name: str) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg.update(
        output=str(tmp / name),
        aoi=[list(DOLOMITES)],
        ingest={"shard_patches": 1},
        cluster={"kind": "local", "n_workers": 1, "threads_per_worker": 1},
    )
    cfg["world"]["cache_dir"] = str(demo_world.parent)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.e2e
def test_killed_run_resumes_to_identical_store(tmp_path: Path, demo_world: Path) -> None:
    full = _job_config(tmp_path, demo_world, "full")
    cut = _job_config(tmp_path, demo_world, "cut")
    # The stages after ingest have their own resume tests: stop the runs there.
    assert cen_process("run", str(full), "--until", "ingest").wait(timeout=600) == 0
    proc = cen_process("run", str(cut), "--until", "ingest")
    flags = tmp_path / "cut" / "dataset.zarr" / "shard_done" / "c"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if flags.is_dir() and len(list(flags.iterdir())) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # What the store says is done: the kill may land while a flag's file is being written,
    # and such a shard is not done (the resumed run writes it again).
    done_before = len(done_shards(open_group(str(tmp_path / "cut" / "dataset.zarr"))))
    total = len(list((tmp_path / "full" / "dataset.zarr" / "shard_done" / "c").iterdir()))
    assert 2 <= done_before < total
    resumed = cen_process("run", str(cut), "--until", "ingest")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    s = json.loads((tmp_path / "cut" / "summary.json").read_text())["ingest"]
    assert s["shards_skipped"] == done_before and s["shards_written"] == total - done_before
    # Its counts add the shards written before (read from the store) to the ones written now.
    whole = json.loads((tmp_path / "full" / "summary.json").read_text())["ingest"]
    assert (s["ok"], s["failed"]) == (whole["ok"], whole["failed"]) and s["ok"] > 0
    # Same arrays, byte for byte, as the run that was never interrupted.
    a, b = tmp_path / "full" / "dataset.zarr", tmp_path / "cut" / "dataset.zarr"
    # Every file, the root zarr.json too: its provenance names the world, not the loopback
    # ports it was served on, and hashes the config without its output directory.
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    shutil.rmtree(tmp_path / "full")


def test_named_seasons_restrict_the_days(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    s2, wc = _items(world_apis, DOLOMITES)
    keys = list(Grid().covering(DOLOMITES))[8:14]
    days = sorted({i["properties"]["datetime"][:10] for i in s2})
    late = days[-1]
    md = late[5:]
    cfg = _cfg(
        tmp_path,
        time={"start": "2021-06-01", "end": "2021-09-30", "seasons": {"late": [md, md]}},
        thresholds={"max_patch_cloud": 100, "max_patch_nodata": 100},
    )
    s = ingest_patches(cfg, keys, s2, wc, world_apis, dask_client)
    ds = xr.open_zarr(s["store"], consolidated=False)
    ok = ds.status.values == "ok"
    assert ok.any()
    assert {str(d)[:10] for d in ds.datetime.values[ok]} == {late}
    assert set(ds.season.values[ok]) == {"late"}
    winter = _cfg(
        tmp_path / "w", time={"start": "2021-06-01", "end": "2021-09-30",
                              "seasons": {"winter": ["12-01", "02-28"]}},
    )  # fmt: skip
    w = ingest_patches(winter, keys, s2, wc, world_apis, dask_client)
    reasons = set(xr.open_zarr(w["store"], consolidated=False).reason.values)
    assert w["ok"] == 0 and all("seasons ['winter']" in r for r in reasons if "WorldCover" not in r)
