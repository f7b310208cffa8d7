"""The paired world: real fixtures plus co-located partners derived from them. Deterministic,
pixels that agree with the real data they come from, valid items, one API per dialect."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import odc.stac
import pystac
import pytest
import rasterio
import shapely
from _support import stac_item_validator
from affine import Affine
from paired_world import (
    BARE_BRIGHTNESS,
    GRASS_NDVI,
    SAO_TOME,
    TREE_NDVI,
    WATER_NIR,
    build_paired,
    ensure_paired,
    is_current,
)
from pyproj import Transformer
from pystac_client import Client
from rasterio.warp import Resampling, reproject, transform_bounds
from rasterio.windows import Window, from_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import Point, box, shape

from cenlib.stac.dialects import reflectance_scale_offset
from cenlib.stac.server import serve_world
from cenlib.world.landcover import TREE, WATER

Json = dict[str, Any]
F64 = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory, real_fixtures: Path) -> Path:
    return build_paired(tmp_path_factory.mktemp("paired") / "seed0", real_fixtures, 0)


@pytest.fixture(scope="module")
def paired_apis(paired: Path) -> Iterator[dict[str, str]]:
    with serve_world(paired) as urls:
        yield urls


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _items(world: Path) -> list[tuple[Path, Json]]:
    return [
        (p, json.loads(p.read_text())) for p in sorted((world / "stac").rglob("items/*/*.json"))
    ]


def _href(item_path: Path, item: Json, key: str) -> Path:
    return (item_path.parent / item["assets"][key]["href"]).resolve()


def _reflectance(dn: npt.NDArray[Any], item: Json, key: str) -> F64:
    """Reflectance by the project's one rule, which ingest uses too (nodata -> NaN)."""
    scale, offset = reflectance_scale_offset(item, key)
    return np.where(dn == 0, np.nan, dn * scale + offset)


@pytest.mark.slow
def test_same_seed_same_bytes_and_reuse(paired: Path, real_fixtures: Path, tmp_path: Path) -> None:
    again = build_paired(tmp_path / "again", real_fixtures, 0)
    first, second = _digest(paired), _digest(again)
    assert len(first) == 1 + 2 + 2 * 11 + 2 + 4 + 3  # manifest, COGs, collections, items
    assert first == second
    assert is_current(again, real_fixtures, 0) and not is_current(again, real_fixtures, 1)
    stamp = (again / "world.json").stat().st_mtime_ns
    assert ensure_paired(again, real_fixtures, 0) == again
    assert (again / "world.json").stat().st_mtime_ns == stamp, "a current build is reused"


def test_build_refuses_to_replace_a_foreign_directory(tmp_path: Path, real_fixtures: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a world"):
        build_paired(tmp_path, real_fixtures, 0)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_manifest_names_both_areas(paired: Path) -> None:
    m = json.loads((paired / "world.json").read_text())
    areas = {a["name"]: a for a in m["areas"]}
    assert areas["sao-tome"]["bbox"] == list(SAO_TOME.bbox)
    w, s, e, n = areas["slovenia-croatia"]["bbox"]
    assert 14.9 < w < 15.1 and 45.0 < s < 45.1 and 16.4 < e < 16.5 and 46.9 < n < 47.0
    assert m["items"]["sentinel-2-l2a"]["synthetic"] == [
        "S2B_32NKF_20230810_0_L2A",
        "S2B_32NKF_20230820_0_L2A",
    ]
    assert m["items"]["esa-worldcover"]["derived"] == [
        "ESA_WorldCover_10m_2021_v200_N45E012",  # a 3-pixel sliver west of 15 E (33TWL)
        "ESA_WorldCover_10m_2021_v200_N45E015",
    ]


@pytest.mark.slow
def test_items_are_valid_and_match_their_files(paired: Path) -> None:
    validator = stac_item_validator()
    items = _items(paired)
    assert len(items) == 4 + 3
    for path, doc in items:
        core = {**doc, "stac_version": "1.1.0", "stac_extensions": []}
        errors = sorted(validator.iter_errors(core), key=str)
        assert not errors, f"{path.name}: {errors[0].message}"
        item = pystac.Item.from_file(str(path))
        parsed = odc.stac.parse_item(item)  # a real consumer understands bands, CRS, grids
        assert parsed.crs() is not None and len(parsed.bands) >= 1
        epsg = doc["properties"]["proj:epsg"]
        geom = shape(doc["geometry"])
        assert np.allclose(geom.bounds, doc["bbox"], atol=1e-6)
        for key, asset in doc["assets"].items():
            with rasterio.open(_href(path, doc, key)) as ds:
                assert ds.crs.to_epsg() == epsg, f"{path.name}:{key}"
                assert list(ds.transform)[:6] == pytest.approx(asset["proj:transform"])
                assert [ds.height, ds.width] == asset["proj:shape"], f"{path.name}:{key}"
        if "earthsearch:boa_offset_applied" in doc["properties"]:
            assert doc["properties"]["earthsearch:boa_offset_applied"] is True


@pytest.mark.slow
def test_written_cogs_are_valid_and_data_lies_in_footprints(paired: Path) -> None:
    for path, item in _items(paired):
        if str(next(iter(item["assets"].values()))["href"]).startswith("/"):
            continue  # a real item: absolute hrefs to the fixtures, which are not ours to check
        geom = shape(item["geometry"])
        key = "map" if "map" in item["assets"] else "red"
        tif = _href(path, item, key)
        valid, errors, _ = cog_validate(str(tif), quiet=True)
        assert valid, f"{tif.name}: {errors}"
        with rasterio.open(tif) as ds:
            assert ds.nodata == 0 and ds.overviews(1)
            raster_box = box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=51))
            assert raster_box.buffer(1e-6).contains(geom), f"{path.name}: footprint outside raster"
            # Data pixels of the item's bbox, read at most ~1000 px a side (a WorldCover sliver
            # 3 px wide vanishes from overviews decimated in both directions).
            bounds = transform_bounds("EPSG:4326", ds.crs, *item["bbox"], densify_pts=51)
            win = from_bounds(*bounds, ds.transform).round_offsets().round_lengths()
            win = win.intersection(Window(0, 0, ds.width, ds.height))
            f = max(1, -(-max(win.height, win.width) // 1000))
            out_shape = (-(-win.height // f), -(-win.width // f))
            data = ds.read(1, window=win, out_shape=out_shape)
            rows, cols = np.nonzero(data)
            assert rows.size, f"{path.name}: no data"
            scale = (win.width / out_shape[1], win.height / out_shape[0])
            pick = np.linspace(0, rows.size - 1, 200).astype(int)
            xs, ys = rasterio.transform.xy(
                ds.window_transform(win) @ Affine.scale(*scale), rows[pick], cols[pick]
            )
            to_raster = Transformer.from_crs(4326, ds.crs, always_xy=True)
            footprint = shapely.transform(geom, to_raster.transform, interleaved=False)
            grown = footprint.buffer(1.5 * max(scale) * abs(ds.transform.a))
            assert all(grown.contains(Point(x, y)) for x, y in zip(xs, ys, strict=True))


@pytest.mark.slow
def test_derived_worldcover_follows_the_real_reflectances(paired: Path) -> None:
    """Every sampled 120 m pixel of a real scene has, at its centre, the class its reflectances
    call for (or nodata where the scene has no data or clouds)."""
    s2 = [(p, i) for p, i in _items(paired) if i["id"].startswith("S2A_33T")]
    wc = {
        i["properties"]["esa_worldcover:product_tile"]: _href(p, i, "map")
        for p, i in _items(paired)
        if "cenlib:derived_from" in i["properties"]
    }
    assert len(s2) == 2 and set(wc) == {"N45E012", "N45E015"}
    rng = np.random.default_rng(0)
    seen: dict[int, int] = {}
    for path, item in s2:
        refl = {}
        for key in ("blue", "green", "red", "nir"):
            with rasterio.open(_href(path, item, key)) as ds:
                refl[key] = _reflectance(ds.read(1), item, key)
                transform, crs = ds.transform, ds.crs
        with rasterio.open(_href(path, item, "scl")) as ds:
            scl = ds.read(1)
        rows = rng.integers(0, scl.shape[0], 4000)
        cols = rng.integers(0, scl.shape[1], 4000)
        xs, ys = rasterio.transform.xy(transform, rows, cols)
        lons, lats = Transformer.from_crs(crs, 4326, always_xy=True).transform(xs, ys)
        # Where scenes overlap, the other scene may have given the pixel: judge only our own.
        others = shapely.union_all([shape(i["geometry"]) for _, i in s2 if i is not item])
        own = ~shapely.contains_xy(others.buffer(0.01), lons, lats)
        codes = np.zeros(rows.size, np.uint8)
        for name, tif in wc.items():
            lon0 = int(name[4:7])
            inside = (lons >= lon0) & (lons < lon0 + 3)
            with rasterio.open(tif) as ds:
                got = [v[0] for v in ds.sample(zip(lons[inside], lats[inside], strict=True))]
            codes[inside] = got
        b, g, r, n = (refl[k][rows, cols] for k in ("blue", "green", "red", "nir"))
        ndvi, ndwi, bright = (n - r) / (n + r), (g - n) / (g + n), (b + g + r) / 3
        no_ground = np.isnan(n) | np.isin(scl[rows, cols], (0, 1, 8, 9, 10))
        water = ~no_ground & ((ndwi > 0) | ((n < WATER_NIR) & (b > n)))
        expected = np.select(
            [
                no_ground,
                water,
                ndvi >= TREE_NDVI,
                ndvi >= GRASS_NDVI,
                bright >= BARE_BRIGHTNESS,
            ],
            [0, 80, 10, 30, 60],
            default=50,
        )
        # The build computes in float32: pixels within rounding of a threshold may go either way.
        margins = [
            ndvi - TREE_NDVI,
            ndvi - GRASS_NDVI,
            bright - BARE_BRIGHTNESS,
            ndwi,
            n - WATER_NIR,
            b - n,
        ]
        exact = np.min(np.abs(margins), axis=0) > 1e-5
        mism = own & exact & (codes != expected)
        assert not mism.any(), (
            f"{item['id']}: {int(mism.sum())} of {int(own.sum())} pixels disagree, "
            f"e.g. got {codes[mism][:5]} expected {expected[mism][:5]}"
        )
        # The rule the ingest tests lean on: dark NIR below blue is water.
        dark = own & ~no_ground & (n < WATER_NIR) & (b > n)
        assert (codes[dark] == WATER).all()
        for c in np.unique(codes[own]).tolist():
            seen[c] = seen.get(c, 0) + int((codes[own] == c).sum())
    assert {0, 10, 30, 50, 60, 80} <= set(seen), seen
    assert seen[10] > seen[30] > seen[50], "mostly forest, then meadows and fields, then towns"


def _clip_window(a: npt.NDArray[np.uint8]) -> tuple[slice, slice]:
    rows, cols = np.nonzero(a)
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


@pytest.mark.slow
def test_synthetic_sentinel2_follows_the_real_worldcover(paired: Path, real_fixtures: Path) -> None:
    """Over Sao Tome, sea is dark in NIR and forest green, on the real WorldCover's pixels."""
    wc_tif = next((real_fixtures / "esa-worldcover").rglob("*_Map.tif"))
    synthetic = sorted(
        (p, i) for p, i in _items(paired) if i["properties"].get("mgrs:utm_zone") == 32
    )
    assert [i["properties"]["datetime"][:10] for _, i in synthetic] == [
        "2023-08-10",
        "2023-08-20",
    ]
    clear_item, cloudy_item = synthetic[0][1], synthetic[1][1]
    assert clear_item["properties"]["eo:cloud_cover"] < 5
    assert cloudy_item["properties"]["eo:cloud_cover"] > 30
    for path, item in synthetic:
        with rasterio.open(_href(path, item, "scl")) as ds:
            scl20 = ds.read(1)
        rows20, cols20 = _clip_window(scl20)
        scl20 = scl20[rows20, cols20]
        win = (slice(rows20.start * 2, rows20.stop * 2), slice(cols20.start * 2, cols20.stop * 2))
        bands = {}
        for key in ("red", "nir"):
            with rasterio.open(_href(path, item, key)) as ds:
                bands[key] = _reflectance(ds.read(1, window=win), item, key)
                wt, crs = ds.window_transform(win), ds.crs
        lc = np.zeros(bands["red"].shape, np.uint8)
        with rasterio.open(wc_tif) as ds:
            reproject(
                rasterio.band(ds, 1),
                lc,
                dst_transform=wt,
                dst_crs=crs,
                resampling=Resampling.nearest,
            )
        cover = 100 * np.isin(scl20, (8, 9, 10)).sum() / (scl20 > 0).sum()
        assert cover == pytest.approx(item["properties"]["eo:cloud_cover"], abs=1e-3)
        # 20 m SCL takes the top-left 10 m pixel of each 2 x 2 block.
        scl = np.repeat(np.repeat(scl20, 2, 0), 2, 1)
        clear = np.isin(scl, (4, 5, 6))
        sea, forest = clear & (lc == WATER), clear & (lc == TREE)
        assert sea.sum() > 50_000 and forest.sum() > 100_000, item["id"]
        nir, red = bands["nir"], bands["red"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ndvi = (nir - red) / (nir + red)
        assert np.mean(nir[sea] < 0.05) > 0.98, item["id"]
        assert np.mean(ndvi[forest] >= 0.5) > 0.98, item["id"]
        # SCL says water exactly where the real WorldCover does, wherever the sky is clear.
        clear20, lc20 = np.isin(scl20, (4, 5, 6)), lc[::2, ::2]
        assert np.array_equal(scl20[clear20] == 6, lc20[clear20] == WATER), item["id"]


@pytest.mark.slow
def test_one_api_per_dialect_serves_real_and_paired_items(paired_apis: dict[str, str]) -> None:
    es = Client.open(paired_apis["earth-search"])
    sao = {i.id for i in es.search(collections=["sentinel-2-l2a"], bbox=SAO_TOME.bbox).items()}
    assert sao == {"S2B_32NKF_20230810_0_L2A", "S2B_32NKF_20230820_0_L2A"}
    slo = es.search(collections=["sentinel-2-l2a"], bbox=(15.5, 46.0, 15.6, 46.1))
    real = {i.id: i for i in slo.items()}
    assert set(real) == {"S2A_33TWL_20230815_0_L2A", "S2A_33TWM_20230815_0_L2A"}
    href = real["S2A_33TWM_20230815_0_L2A"].assets["nir"].href
    assert href.startswith("file:///") and Path(href[7:]).is_file()
    august = es.search(collections=["sentinel-2-l2a"], datetime="2023-08-01/2023-08-31")
    assert len(list(august.items())) == 4

    pc = Client.open(paired_apis["planetary-computer"])
    assert [c.id for c in pc.get_collections()] == ["esa-worldcover"]
    wc_sao = {i.id for i in pc.search(collections=["esa-worldcover"], bbox=SAO_TOME.bbox).items()}
    assert wc_sao == {"ESA_WorldCover_10m_2021_v200_N00E006"}
    wc_slo = {
        i.id
        for i in pc.search(collections=["esa-worldcover"], bbox=(15.5, 46.0, 15.6, 46.1)).items()
    }
    assert wc_slo == {"ESA_WorldCover_10m_2021_v200_N45E015"}
