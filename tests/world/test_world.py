"""The synthetic world: deterministic, valid COGs and STAC items, correct georeferencing, and
pixels that agree with the land cover they are rendered from."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from _support import stac_item_validator
from pyproj import Transformer
from rasterio.warp import transform_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import Point, box, shape

from cenlib.stac import dialects
from cenlib.world.build import build_world
from cenlib.world.landcover import BARE, MANGROVE, MOSS, SNOW, TREE, WATER, AreaGrid, paint
from cenlib.world.presets import preset_areas
from cenlib.world.tiling import worldcover_tile_origin


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _items(world: Path) -> list[tuple[Path, dict[str, Any]]]:
    return [
        (p, json.loads(p.read_text())) for p in sorted((world / "stac").rglob("items/*/*.json"))
    ]


def _href(item_path: Path, item: dict[str, Any], key: str) -> Path:
    return (item_path.parent / item["assets"][key]["href"]).resolve()


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build_world(a, "tiny", 7)
    build_world(b, "tiny", 7)
    build_world(c, "tiny", 8)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert len(da) > 20
    assert da == db
    tifs = [k for k in da if k.endswith(".tif")]
    assert all(da[k] != dc[k] for k in tifs)


def test_demo_preset_covers_zones_and_hemispheres(demo_world: Path) -> None:
    m = json.loads((demo_world / "world.json").read_text())
    assert m["counts"]["sentinel2_scenes"] >= 9
    es = [i for p, i in _items(demo_world) if "earth-search" in str(p)]
    zones = {i["properties"]["mgrs:utm_zone"] for i in es}
    assert len(zones) >= 3
    assert any(i["bbox"][1] < 0 for i in es), "one area in the southern hemisphere"
    straddling = [
        a
        for a in preset_areas("demo")
        if int((a.bbox[0] + 180) // 6) != int((a.bbox[2] + 180) // 6)
    ]
    assert straddling, "one area straddles a UTM zone boundary"
    dates = {i["properties"]["datetime"][:10] for i in es}
    assert len(dates) >= 3


def test_every_tif_is_a_valid_cog(demo_world: Path) -> None:
    tifs = sorted((demo_world / "data").rglob("*.tif"))
    assert len(tifs) >= 4 + 9 * 11
    for t in tifs:
        valid, errors, _warnings = cog_validate(str(t), quiet=True)
        assert valid, f"{t.name}: {errors}"
        with rasterio.open(t) as ds:
            assert ds.crs is not None and ds.nodata == 0
            assert ds.overviews(1), f"{t.name} has no overviews"


def test_items_are_valid_stac(demo_world: Path) -> None:
    import odc.stac

    validator = stac_item_validator()
    items = _items(demo_world)
    assert items
    for path, doc in items:
        core = {**doc, "stac_version": "1.1.0", "stac_extensions": []}
        errors = sorted(validator.iter_errors(core), key=str)
        assert not errors, f"{path.name}: {errors[0].message}"
        item = pystac.Item.from_file(str(path))  # self href lets relative assets resolve
        proj = pystac.extensions.projection.ProjectionExtension.ext(item)
        assert proj.epsg in (4326,) or 32601 <= (proj.epsg or 0) <= 32760
        for key, asset in item.assets.items():
            pa = pystac.extensions.projection.ProjectionExtension.ext(asset)
            assert pa.shape and pa.transform and len(pa.transform) == 6, f"{path.name}:{key}"
            assert asset.media_type == pystac.MediaType.COG
        # odc-stac, a real consumer, understands the records: bands, CRS, grids.
        parsed = odc.stac.parse_item(item)
        assert parsed.crs() is not None and len(parsed.bands) >= 1


def test_item_grids_match_files_and_footprints_match_data(demo_world: Path) -> None:
    for path, item in _items(demo_world):
        geom = shape(item["geometry"])
        assert np.allclose(geom.bounds, item["bbox"], atol=1e-6)
        for key, asset in item["assets"].items():
            with rasterio.open(_href(path, item, key)) as ds:
                assert list(ds.transform)[:6] == pytest.approx(asset["proj:transform"])
                assert [ds.height, ds.width] == asset["proj:shape"]
                epsg = item["properties"]["proj:epsg"]
                assert ds.crs.to_epsg() == epsg
                raster_box = box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=51))
                assert raster_box.buffer(1e-6).contains(geom), (
                    f"{path.name}: footprint outside raster"
                )
                # Every data pixel of a coarse overview lies in the footprint (tolerance: 1 px).
                ov = ds.read(1, out_shape=(ds.height // 32, ds.width // 32))
                rows, cols = np.nonzero(ov)
                assert rows.size, f"{path.name}:{key} has no data at all"
                pick = np.linspace(0, rows.size - 1, 60).astype(int)
                xs, ys = rasterio.transform.xy(
                    ds.transform @ ds.transform.scale(32, 32), rows[pick], cols[pick]
                )
                # Compare in the raster's own CRS, where one overview pixel has a fixed size.
                to_raster = Transformer.from_crs(4326, ds.crs, always_xy=True)
                footprint = shapely.transform(geom, to_raster.transform, interleaved=False)
                grown = footprint.buffer(1.5 * 32 * abs(ds.transform.a))
                assert all(grown.contains(Point(x, y)) for x, y in zip(xs, ys, strict=True)), (
                    f"{path.name}:{key}"
                )
            break  # one asset per item suffices for pixels; grids of all assets checked below
        for key, asset in item["assets"].items():
            with rasterio.open(_href(path, item, key)) as ds:
                assert [ds.height, ds.width] == asset["proj:shape"], f"{path.name}:{key}"


def test_worldcover_pixels_land_where_tile_name_says(demo_world: Path) -> None:
    tifs = sorted((demo_world / "data/esa-worldcover").rglob("*_Map.tif"))
    assert len(tifs) == 4
    painted = {a.name: paint(a, 0) for a in preset_areas("demo")}
    found = 0
    for t in tifs:
        name = t.name.split("_")[-2]
        lon0, lat0 = worldcover_tile_origin(name)
        tile = AreaGrid.for_worldcover_tile(name)
        with rasterio.open(t) as ds:
            assert ds.crs.to_epsg() == 4326 and ds.dtypes[0] == "uint8"
            assert ds.res == pytest.approx((1 / 12000, 1 / 12000))
            assert ds.bounds == pytest.approx((lon0, lat0, lon0 + 3, lat0 + 3))
            assert tuple(tile.transform)[:6] == pytest.approx(tuple(ds.transform)[:6])
        # The painted area sits at the same global pixels inside the tile.
        for area_name, (codes, grid) in painted.items():
            common = grid.intersection(tile)
            if common is None:
                continue
            with rasterio.open(t) as ds:
                got = ds.read(1, window=tile.slices(common))
            assert np.array_equal(got, codes[grid.slices(common)]), f"{name}/{area_name}"
            found += 1
            assert set(np.unique(got)) <= {10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100}
    assert found == 4, "each demo area lands in its tiles (dolomites in two)"


def test_land_cover_is_coherent_and_biome_specific() -> None:
    expect = {
        "dolomites": {TREE, SNOW, BARE, WATER},
        "sao-luis": {MANGROVE, WATER, TREE},
        "finnmark": {MOSS, WATER},
    }
    for area in preset_areas("demo"):
        codes, grid = paint(area, 0)
        assert isinstance(grid, AreaGrid)
        present = set(np.unique(codes).tolist())
        assert expect[area.name] <= present, area.name
        assert len(present) >= 6, f"{area.name}: only {present}"
        # Coherent regions, not noise: most pixels share their class with their right neighbour.
        same = float(np.mean(codes[:, 1:] == codes[:, :-1]))
        assert same > 0.9, f"{area.name}: {same:.2f}"


def test_pixels_follow_land_cover_and_scl_matches_cloud_cover(demo_world: Path) -> None:
    """NDVI is high on trees and negative on water; eo:cloud_cover is what the SCL band says."""
    from rasterio.warp import Resampling, reproject

    checked = 0
    for path, item in _items(demo_world):
        if "earth-search" not in str(path):
            continue
        with rasterio.open(_href(path, item, "scl")) as ds:
            scl = ds.read(1)
        valid = scl > 0
        cloudy = np.isin(scl, (8, 9, 10))
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(
            100 * cloudy.sum() / valid.sum(), abs=1e-3
        )
        # Compare pixels with the WorldCover tile they derive from, on the clear pixels.
        wc = sorted((demo_world / "data/esa-worldcover").rglob("*_Map.tif"))
        with (
            rasterio.open(_href(path, item, "red")) as r,
            rasterio.open(_href(path, item, "nir")) as n,
        ):
            ov_rows, ov_cols = np.nonzero(scl[::8, ::8])
            r0, c0 = ov_rows.min() * 16, ov_cols.min() * 16
            h, w = (ov_rows.max() + 1) * 16 - r0, (ov_cols.max() + 1) * 16 - c0
            win = ((r0, r0 + h), (c0, c0 + w))
            # Each item's own rule: Finnmark's Earth-Search-only scenes have the offset removed.
            scale, offset = dialects.reflectance_scale_offset(item, "red")
            red = r.read(1, window=win).astype(float) * scale + offset
            nir = n.read(1, window=win).astype(float) * scale + offset
            wt = r.window_transform(win)
            crs = r.crs
        lc = np.zeros(red.shape, np.uint8)
        for t in wc:
            part = np.zeros_like(lc)
            with rasterio.open(t) as ds:
                reproject(
                    rasterio.band(ds, 1),
                    part,
                    dst_transform=wt,
                    dst_crs=crs,
                    resampling=Resampling.nearest,
                )
            lc = np.where(lc == 0, part, lc)
        scl10 = np.repeat(
            np.repeat(scl[r0 // 2 : (r0 + h) // 2, c0 // 2 : (c0 + w) // 2], 2, 0), 2, 1
        )[: lc.shape[0], : lc.shape[1]]
        clear = np.isin(scl10, (4, 5, 6, 11))
        ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
        for code, lo, hi in ((TREE, 0.6, 1.0), (WATER, -1.0, 0.0)):
            sel = clear & (lc == code)
            if sel.sum() > 200:
                med = float(np.median(ndvi[sel]))
                assert lo <= med <= hi, f"{path.name}: class {code} median NDVI {med:.2f}"
                checked += 1
    assert checked >= 12, "too few clear tree/water samples to judge"


def test_build_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic world"):
        build_world(tmp_path, "tiny", 0)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
