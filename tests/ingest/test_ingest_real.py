"""Ingest on the real fixtures, paired by the world generator (cenlib.world.paired).

Real Sentinel-2 (33TWM/33TWL, Earth Search, offset already removed from the DNs) with a
WorldCover tile derived from it; the real WorldCover tile N00E006 with Sentinel-2 rendered from
it. Plus the Planetary Computer record's asset keys and the baseline rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from distributed import Client
from paired_world import build_paired

from cenlib.config import parse_config
from cenlib.grid import Grid, PatchKey
from cenlib.ingest.read import Readers
from cenlib.ingest.scenes import candidates, negative_dark_share, reflectance
from cenlib.ingest.stage import failure_rows, ingest_patches
from cenlib.stac import dialects
from cenlib.stac.search import SearchRequest, search
from cenlib.stac.server import serve_world

AUGUST = "2023-08-01T00:00:00Z/2023-08-31T23:59:59Z"
Items = list[dict[str, Any]]
# Points (lon, lat): 33TWM only; 33TWL only; the 10 km band the two tiles share; a lake in 33TWM.
TWM, TWL, EDGE, LAKE = (15.60, 46.50), (15.40, 45.50), (15.70, 46.00), (16.400, 46.317)


@pytest.fixture(scope="module")
def paired(
    tmp_path_factory: pytest.TempPathFactory, real_fixtures: Path
) -> Iterator[dict[str, str]]:
    out = build_paired(tmp_path_factory.mktemp("paired") / "world", real_fixtures)
    with serve_world(out) as urls:
        yield urls


def _items(urls: dict[str, str], bbox: tuple[float, float, float, float]) -> tuple[Items, Items]:
    s2 = search(SearchRequest(urls["earth-search"], "sentinel-2-l2a", bbox, AUGUST)).items
    wc = search(SearchRequest(urls["planetary-computer"], "esa-worldcover", bbox)).items
    return [i.to_dict() for i in s2], [i.to_dict() for i in wc]


def _run(
    tmp: Path, urls: dict[str, str], client: Client, points: list[tuple[float, float]]
) -> tuple[list[PatchKey], Items, dict[str, Any], xr.Dataset]:
    grid = Grid()
    keys = [grid.at(*p) for p in points]
    lons, lats = [p[0] for p in points], [p[1] for p in points]
    s2, wc = _items(urls, (min(lons) - 0.05, min(lats) - 0.05, max(lons) + 0.05, max(lats) + 0.05))
    cfg = parse_config(
        {
            "output": str(tmp / "run"),
            "time": {"start": "2023-08-01", "end": "2023-08-31"},
            "thresholds": {"max_patch_cloud": 20, "max_patch_nodata": 5, "min_valid_fraction": 0.5},
            "ingest": {"shard_patches": 2},
        }
    )
    summary = ingest_patches(cfg, keys, s2, wc, urls, client)
    return keys, s2, summary, xr.open_zarr(summary["store"], consolidated=False)


@pytest.mark.slow
def test_real_sentinel2_both_tiles_and_their_edge(
    tmp_path: Path, paired: dict[str, str], dask_client: Client
) -> None:
    _keys, s2, summary, ds = _run(tmp_path, paired, dask_client, [TWM, TWL, EDGE, LAKE])
    assert list(ds.status.values) == ["ok"] * 4, failure_rows(summary["store"])
    used = [str(v) for v in ds.s2_items.values]
    assert used[0] == "S2A_33TWM_20230815_0_L2A" and used[1] == "S2A_33TWL_20230815_0_L2A"
    # The edge patch has both tiles (the earlier id fills first; the other is not needed).
    edge_items = {i["id"] for i in s2 if "2023-08-15" in i["properties"]["datetime"]}
    assert {"S2A_33TWM_20230815_0_L2A", "S2A_33TWL_20230815_0_L2A"} <= edge_items
    assert used[2].split(",")[0] in edge_items
    assert str(ds.datetime.values[0])[:10] == "2023-08-15"
    refl = ds.reflectance.values
    assert np.isfinite(refl).all()
    # Earth Search removed the offset already (boa_offset_applied): lake NIR is small but positive.
    lake = ds.scl.values[3] == 6
    assert lake.mean() > 0.05
    nir = refl[3, 3][lake]
    assert 0.0 < float(np.median(nir)) < 0.08
    assert not any("suspect" in r["reason"] for r in failure_rows(summary["store"]))
    # Land cover from the derived WorldCover agrees with the real scene's own classes.
    lc = ds.land_cover.values[3]
    assert (lc[lake] == 1).mean() > 0.9  # water


@pytest.mark.slow
def test_trusting_raster_bands_offset_is_flagged(paired: dict[str, str]) -> None:
    """The data check: with offset -0.1 applied twice, the lake's pixels turn negative."""
    key = Grid().at(*LAKE)
    s2, _ = _items(paired, (16.35, 46.28, 16.45, 46.35))
    (item,) = [i for i in s2 if i["id"] == "S2A_33TWM_20230815_0_L2A"]
    trusting = json.loads(json.dumps(item))
    trusting["properties"]["earthsearch:boa_offset_applied"] = False  # -> raster:bands -0.1
    assert dialects.reflectance_scale_offset(item, "nir") == (0.0001, 0.0)
    assert dialects.reflectance_scale_offset(trusting, "nir") == (0.0001, -0.1)
    with Readers() as r:
        (good,) = candidates([item])
        (bad,) = candidates([trusting])
        ok = reflectance(r, good, ("nir",), key.geobox, "bilinear")
        wrong = reflectance(r, bad, ("nir",), key.geobox, "bilinear")
    assert negative_dark_share(ok) < 0.1
    assert negative_dark_share(wrong) > 0.5
    assert np.array_equal(wrong.astype(int), ok.astype(int) - 1000)


@pytest.mark.slow
def test_real_worldcover_with_synthetic_sentinel2(
    tmp_path: Path, paired: dict[str, str], dask_client: Client
) -> None:
    points = [(6.73, 0.34), (6.70, 0.30)]  # Sao Tome town and forest
    _keys, _s2, summary, ds = _run(tmp_path, paired, dask_client, points)
    assert list(ds.status.values) == ["ok", "ok"], failure_rows(summary["store"])
    assert all(str(v) == "ESA_WorldCover_10m_2021_v200_N00E006" for v in ds.wc_items.values)
    # The clear date is chosen over the cloudy one.
    assert all(str(v).startswith("2023-08-10") for v in ds.datetime.values)
    classes = set(np.unique(ds.land_cover.values).tolist())
    assert {3} <= classes  # tree, from the real map
    tree = ds.land_cover.values == 3
    red, nir = ds.reflectance.values[:, 2], ds.reflectance.values[:, 3]
    ndvi = (nir - red) / (nir + red)
    assert float(np.nanmedian(ndvi[tree])) > 0.5


def test_planetary_computer_record_keys_and_baseline(real_fixtures: Path) -> None:
    path = next((real_fixtures / "stac-items" / "planetary-computer").glob("S2B_*.json"))
    item = json.loads(path.read_text())
    assert dialects.detect(item) == "planetary-computer"
    for band, key in {
        "blue": "B02",
        "red": "B04",
        "nir": "B08",
        "swir16": "B11",
        "scl": "SCL",
    }.items():
        assert dialects.asset_key("planetary-computer", band) == key and key in item["assets"]
    assert item["properties"]["s2:processing_baseline"] == "02.12"
    assert dialects.reflectance_scale_offset(item, "red") == (0.0001, 0.0)
    item["properties"]["s2:processing_baseline"] = "05.00"
    assert dialects.reflectance_scale_offset(item, "red") == (0.0001, -0.1)
