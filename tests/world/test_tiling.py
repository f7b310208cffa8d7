"""Tile naming and geometry of the real WorldCover and Sentinel-2 tilings."""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from cenlib.world.tiling import (
    s2_tile,
    s2_tiles_covering,
    worldcover_tile_name,
    worldcover_tile_origin,
    worldcover_tiles,
)


@given(st.integers(-30, 29).map(lambda v: v * 3), st.integers(-60, 59).map(lambda v: v * 3))
def test_worldcover_name_roundtrip(lat0: int, lon0: int) -> None:
    name = worldcover_tile_name(lon0, lat0)
    assert len(name) == 7
    assert worldcover_tile_origin(name) == (lon0, lat0)


@given(st.floats(-179.9, 179.9), st.floats(-59.9, 82.9))
def test_point_lies_in_its_worldcover_tile(lon: float, lat: float) -> None:
    names = worldcover_tiles((lon, lat, lon + 1e-4, lat + 1e-4))
    assert 1 <= len(names) <= 4
    origins = [worldcover_tile_origin(n) for n in names]
    assert any(lo <= lon < lo + 3 and la <= lat < la + 3 for lo, la in origins)
    for lo, la in origins:  # every tile returned touches the box's interior
        assert lo < lon + 1e-4 and lon < lo + 3 and la < lat + 1e-4 and lat < la + 3


def test_real_names() -> None:
    assert worldcover_tile_name(6, 0) == "N00E006"
    assert worldcover_tile_name(-45, -3) == "S03W045"
    assert worldcover_tiles((11.95, 46.5, 12.05, 46.6)) == ["N45E009", "N45E012"]


def test_s2_tile_matches_real_planetary_computer_record(real_fixtures) -> None:  # type: ignore[no-untyped-def]
    item = json.loads(
        (
            real_fixtures
            / "stac-items/planetary-computer"
            / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
        ).read_text()
    )
    b02 = item["assets"]["B02"]
    t = s2_tile("06VVN")
    assert t.epsg == item["properties"]["proj:epsg"]
    assert list(t.transform(10))[:6] == b02["proj:transform"]
    assert list(t.shape(10)) == b02["proj:shape"]
    assert list(t.bounds) == b02["proj:bbox"]


@settings(max_examples=40, deadline=None)
@given(st.floats(-170, 170), st.floats(-70, 70))
@example(0.0, -7.456867717705438e-10)  # a hair south of the equator: a probe names band N
def test_covering_tiles_contain_the_point(lon: float, lat: float) -> None:
    box = (lon, lat, lon + 0.001, lat + 0.001)
    tiles = s2_tiles_covering(box)
    assert tiles, "every land point is in at least one Sentinel-2 tile"
    holding = 0
    for t in tiles:
        to_utm = Transformer.from_crs(4326, t.epsg, always_xy=True)
        x0, y0, x1, y1 = t.bounds
        xs, ys = to_utm.transform(
            [box[0], box[2], box[0], box[2]], [box[1], box[1], box[3], box[3]]
        )
        # Every tile meets the box (a box across a 100 km square edge needs both squares) ...
        assert min(xs) <= x1 and max(xs) >= x0 and min(ys) <= y1 and max(ys) >= y0
        x, y = to_utm.transform(lon, lat)
        holding += x0 <= x <= x1 and y0 <= y <= y1
    assert holding >= 1  # ... and one of them holds the corner point itself


def test_tiny_negative_coordinates_keep_their_tile() -> None:
    assert worldcover_tiles((0.0, -5e-324, 1e-4, 1e-4)) == ["S03E000", "N00E000"]
