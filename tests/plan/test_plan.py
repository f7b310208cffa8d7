"""Stage plan: patch lists, candidates, the WorldCover estimate, the draw and the plan table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from _support import warped_read
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.enums import Resampling
from shapely.geometry import Point, box
from shapely.ops import unary_union

from cenlib.classes import CLASS_NAMES, worldcover_to_index
from cenlib.config import GridConfig, PlanConfig, RunConfig, TimeConfig
from cenlib.grid import Grid, PatchKey
from cenlib.plan import stage as plan
from cenlib.plan.stage import PatchCover, PlanError

GRID = Grid()
UTM = Grid("utm")


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> Path:
    return tiny_world


@pytest.fixture(scope="module")
def area(world: Path) -> tuple[str, tuple[float, float, float, float]]:
    a = json.loads((world / "world.json").read_text())["areas"][0]
    return a["name"], tuple(a["bbox"])


@pytest.fixture(scope="module")
def wc_items(world: Path) -> list[dict[str, Any]]:
    files = sorted((world / "stac/planetary-computer/items/esa-worldcover").glob("*.json"))
    return [pystac.Item.from_file(p).to_dict() for p in files]


def _grow(bbox: tuple[float, float, float, float], d: float) -> tuple[float, float, float, float]:
    w, s, e, n = bbox
    return w - d, s - d, e + d, n + d


# ---------------------------------------------------------------------------- patch lists


def test_text_list_skips_comments_and_deduplicates(tmp_path: Path) -> None:
    p = tmp_path / "ids.txt"
    p.write_text("# my patches\n4424_2903_patch10\n\n4424_2903_patch01\n4424_2903_patch10\n")
    keys = plan.patches_from_list(p, GRID)
    assert [k.id for k in keys] == ["4424_2903_patch10", "4424_2903_patch01"]


def test_csv_ids_and_points(tmp_path: Path) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text("note,id\na,4424_2903_patch10\nb,4425_2903_patch00\n")
    assert [k.id for k in plan.patches_from_list(ids, GRID)] == [
        "4424_2903_patch10",
        "4425_2903_patch00",
    ]
    pts = tmp_path / "pts.csv"
    pts.write_text("lat,lon\n46.32,14.42\n46.32,14.4201\n-2.6,-44.35\n")
    keys = plan.patches_from_list(pts, GRID)
    assert keys == list(dict.fromkeys([GRID.at(14.42, 46.32), GRID.at(-44.35, -2.6)]))
    assert [k.grid for k in plan.patches_from_list(pts, UTM)] == ["utm", "utm"]
    pts.write_text("lon,lat\n10,84.5\n")  # inside Web Mercator, north of the UTM zones
    assert plan.patches_from_list(pts, GRID) == [GRID.at(10, 84.5)]
    with pytest.raises(PlanError, match=r"line 2: lat '84\.5' .* -80\.\.84 \(the utm grid\)"):
        plan.patches_from_list(pts, UTM)


def test_geojson_points_and_polygons(tmp_path: Path) -> None:
    poly = box(14.41, 46.31, 14.43, 46.32)
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-44.35, -2.6]}},
            {"type": "Feature", "geometry": poly.__geo_interface__, "properties": {}},
        ],
    }
    p = tmp_path / "aoi.geojson"
    p.write_text(json.dumps(doc))
    keys = plan.patches_from_list(p, GRID)
    assert keys[0] == GRID.at(-44.35, -2.6)
    touched = set(keys[1:])
    assert GRID.at(14.42, 46.315) in touched
    assert all(k.lonlat_polygon().geom.intersects(poly) for k in touched)
    assert unary_union([k.lonlat_polygon().geom for k in touched]).contains(poly)
    # A patch of the bbox corners' rows that misses the polygon is not listed.
    assert touched <= set(GRID.covering(poly.bounds))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("ids.txt", "4424_2903_patch10\n\n4424_2903_patch3\n", ["line 3", "'4424_2903_patch3'"]),
        ("ids.csv", "name,x\na,1\n", ["line 1", "no 'id' column", "'lon,lat'"]),
        ("pts.csv", "lon,lat\n14.4,46.3\nabc,46.3\n", ["line 3", "lon 'abc'", "degrees"]),
        ("pts.csv", "lon,lat\n200,46.3\n", ["line 2", "lon '200'", "-180..180"]),
        ("pts.csv", "lon,lat\n10,88\n", ["line 2", "lat '88'", "-85.0511..85.0511"]),
        (
            "a.geojson",
            '{"type": "FeatureCollection", "features": [{"geometry": {"type": "Point",'
            ' "coordinates": [1, 2]}}, {"geometry": {"type": "LineString", "coordinates": []}}]}',
            ["feature 1", "'LineString'", "use Point"],
        ),
        (
            "a.geojson",
            '{"type": "FeatureCollection", "features": [{"geometry": {"type": "Point",'
            ' "coordinates": [1]}}]}',
            ["feature 0", "bad Point coordinates [1]", "[lon, lat]"],
        ),
        ("a.geojson", '{"type": "Feature"}', ["not a GeoJSON FeatureCollection"]),
        ("a.geojson", '{"type": \n', ["line 2", "not valid JSON"]),
        ("empty.txt", "# nothing\n", ["lists no patches"]),
    ],
)
def test_list_errors_say_where_and_how(
    tmp_path: Path, name: str, content: str, expected: list[str]
) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(PlanError) as err:
        plan.patches_from_list(p, GRID)
    assert str(p) in str(err.value)
    for text in expected:
        assert text in str(err.value)


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"plan\.list_file"):
        plan.patches_from_list(tmp_path / "nope.csv", GRID)


# ---------------------------------------------------------------------------- candidates


@pytest.mark.parametrize("grid", [GRID, UTM])
def test_candidates_cover_each_area_once(grid: Grid) -> None:
    a, b = (14.40, 46.30, 14.45, 46.34), (14.44, 46.33, 14.47, 46.36)
    cands = plan.candidates([("a", a), ("b", b)], grid)
    keys = [k for k, _ in cands]
    assert len(keys) == len(set(keys))
    union = unary_union([k.lonlat_polygon().geom for k in keys])
    assert union.contains(box(*a)) and union.contains(box(*b))
    for k, name in cands:
        poly = k.lonlat_polygon().geom
        assert poly.intersects(box(*a)) or poly.intersects(box(*b))
        if poly.intersects(box(*a).buffer(-1e-6)):
            assert name == "a"  # shared patches belong to the first area


# ---------------------------------------------------------------------------- WorldCover


def _full_resolution(key: PatchKey, href: str) -> tuple[float, int]:
    codes = warped_read(href, key, Resampling.nearest)
    counts = np.bincount(worldcover_to_index(codes).ravel(), minlength=12)
    valid = 1 - counts[0] / codes.size
    return float(valid), int(np.argmax(counts[1:]) + 1) if valid else 0


@pytest.mark.parametrize("grid", [GRID, UTM])
def test_summary_agrees_with_full_resolution(
    grid: Grid, area: tuple[str, Any], wc_items: list[dict[str, Any]]
) -> None:
    keys = [k for k, _ in plan.candidates([("x", _grow(area[1], 0.01))], grid)]
    cover = plan.worldcover_summary(keys, wc_items)
    assert set(cover) == set(keys)
    href = pystac.Item.from_dict(wc_items[0]).assets["map"].get_absolute_href()
    assert href is not None
    agree, dominated = 0, 0
    for k in keys:
        valid, dominant = _full_resolution(k, href)
        assert cover[k].valid_fraction == pytest.approx(valid, abs=0.05), k
        assert sum(cover[k].fractions) == pytest.approx(1.0)
        if valid > 0.5:
            dominated += 1
            agree += cover[k].dominant == dominant
        if valid == 0:
            assert cover[k].dominant == 0
    fractions = [c.valid_fraction for c in cover.values()]
    assert min(fractions) == 0.0 and any(0.0 < f < 1.0 for f in fractions)
    assert dominated >= 3 and agree >= 0.8 * dominated


def test_summary_opens_each_tile_once(
    monkeypatch: pytest.MonkeyPatch, area: tuple[str, Any], wc_items: list[dict[str, Any]]
) -> None:
    opened: list[str] = []
    real_open = rasterio.open

    def counting_open(href: str, *a: Any, **kw: Any) -> Any:
        opened.append(href)
        return real_open(href, *a, **kw)

    monkeypatch.setattr(plan.rasterio, "open", counting_open)
    keys = [k for k, _ in plan.candidates([area], GRID)]
    plan.worldcover_summary(keys, wc_items)
    assert len(keys) > 4 and len(opened) == 1
    plan.worldcover_summary([GRID.at(-44.35, -2.6)], wc_items)  # outside every item: no read
    assert len(opened) == 1


def test_summary_does_not_depend_on_batching(
    monkeypatch: pytest.MonkeyPatch, area: tuple[str, Any], wc_items: list[dict[str, Any]]
) -> None:
    keys = [k for k, _ in plan.candidates([("x", _grow(area[1], 0.01))], GRID)]
    whole = plan.worldcover_summary(keys, wc_items)
    monkeypatch.setattr(plan, "BATCH", 3)
    assert plan.worldcover_summary(keys[::-1], wc_items) == whole


def test_item_hrefs(tmp_path: Path, wc_items: list[dict[str, Any]], area: tuple[str, Any]) -> None:
    key = GRID.at((area[1][0] + area[1][2]) / 2, (area[1][1] + area[1][3]) / 2)
    expected = plan.worldcover_summary([key], wc_items)[key]
    item = json.loads(json.dumps(wc_items[0]))
    href = pystac.Item.from_dict(item).assets["map"].get_absolute_href()
    assert href is not None
    item["links"] = []
    item["assets"]["map"]["href"] = Path(href).as_uri()
    assert plan.worldcover_summary([key], [item])[key] == expected
    item["assets"]["map"]["href"] = "../data/map.tif"
    with pytest.raises(PlanError, match="no 'self' link"):
        plan.worldcover_summary([key], [item])
    item["assets"]["map"]["href"] = str(tmp_path / "missing.tif")
    with pytest.raises(PlanError, match="cannot read asset 'map'"):
        plan.worldcover_summary([key], [item])


# ---------------------------------------------------------------------------- drawing


def test_min_worldcover_fraction_drops_patches_off_data(
    area: tuple[str, Any], wc_items: list[dict[str, Any]]
) -> None:
    cands = plan.candidates([("wide", _grow(area[1], 0.02))], GRID)
    cover = plan.worldcover_summary([k for k, _ in cands], wc_items)
    kept = plan.draw(cands, cover, None, 0, min_worldcover_fraction=0.5)
    assert 0 < len(kept) < len(cands)
    assert all(cover[k].valid_fraction >= 0.5 for k, _ in kept)
    dropped = set(cands) - set(kept)
    assert any(cover[k].valid_fraction == 0 for k, _ in dropped)
    assert len(plan.draw(cands, cover, None, 0, min_worldcover_fraction=0.0)) == len(cands)


def _synthetic(n: int, classes: dict[int, int]) -> tuple[list[Any], dict[PatchKey, PatchCover]]:
    """n patches whose dominant classes follow `classes` (class -> how many)."""
    keys = list(GRID.covering((14.0, 46.0, 15.0, 46.5)))[:n]
    dominant = [c for c, m in classes.items() for _ in range(m)]
    assert len(keys) == n == len(dominant)
    cover = {k: PatchCover(1.0, d, ()) for k, d in zip(keys, dominant, strict=True)}
    return [(k, "a") for k in keys], cover


def test_draw_is_seeded_and_respects_count() -> None:
    cands, cover = _synthetic(300, {3: 200, 6: 100})
    a = plan.draw(cands, cover, 40, seed=7)
    assert len(a) == 40 and len(set(a)) == 40
    assert a == plan.draw(cands[::-1], cover, 40, seed=7)  # input order does not matter
    assert a != plan.draw(cands, cover, 40, seed=8)
    assert len(plan.draw(cands, cover, 1000, seed=7)) == 300


def test_stratified_draw_favours_rare_classes() -> None:
    cands, cover = _synthetic(1000, {3: 950, 6: 40, 10: 10})
    plain = Counter(cover[k].dominant for k, _ in plan.draw(cands, cover, 60, seed=1))
    strat = Counter(cover[k].dominant for k, _ in plan.draw(cands, cover, 60, 1, stratify=True))
    # Mangroves have only 10 patches: all drawn, their unused share split between the others.
    assert strat == {10: 10, 6: 25, 3: 25}
    assert plain[10] < strat[10] and plain[6] < strat[6]


def test_quotas_redistribute_shortfall() -> None:
    assert plan._quotas({1: 1, 2: 10, 3: 10}, 10) == {1: 1, 2: 4, 3: 5}
    assert plan._quotas({1: 2, 2: 3, 3: 100}, 30) == {1: 2, 2: 3, 3: 25}
    assert sum(plan._quotas({1: 5, 2: 5}, 10).values()) == 10


def test_spatial_order_groups_neighbours() -> None:
    # 8 x 8 tiles = 16 x 16 patches, aligned to Z-order blocks: every 16 in a row form a square.
    keys = [
        PatchKey("chatearthnet", 13, col, row, sub)
        for col in range(4424, 4432)
        for row in range(2896, 2904)
        for sub in range(4)
    ]
    ordered = sorted(keys, key=plan.spatial_order)
    for i in range(0, len(ordered), 16):
        chunk = ordered[i : i + 16]
        xs = {2 * k.col + k.sub % 2 for k in chunk}
        ys = {2 * k.row + k.sub // 2 for k in chunk}
        assert len(xs) == 4 and len(ys) == 4


# ---------------------------------------------------------------------------- the plan table


def _config(tmp_path: Path, **plan_kw: Any) -> RunConfig:
    return RunConfig(output=tmp_path / "run", plan=PlanConfig(**plan_kw))


def test_make_plan_round_trips_through_geoparquet(
    tmp_path: Path, area: tuple[str, Any], wc_items: list[dict[str, Any]]
) -> None:
    cfg = _config(tmp_path, count=5, seed=3, min_worldcover_fraction=0.3)
    gdf = plan.make_plan(cfg, [area], wc_items)
    assert list(gdf.columns) == list(plan.COLUMNS) and len(gdf) == 5
    assert (gdf["wc_valid_fraction"] >= 0.3).all() and (gdf["aoi"] == area[0]).all()
    assert set(gdf["crs"]) == {"EPSG:3857"} and set(gdf["time_start"]) == {"2021-06-01"}
    assert gdf["wc_dominant"].isin(CLASS_NAMES[1:]).all()
    path = tmp_path / "run" / "plan.parquet"
    plan.write_plan(gdf, path)
    back = plan.read_plan(path)
    assert back.crs == "EPSG:4326"
    assert back.drop(columns="geometry").equals(gdf.drop(columns="geometry"))
    assert back.geometry.geom_equals_exact(gdf.geometry, 1e-12).all()
    keys = plan.keys_from_plan(back, GRID)
    assert [k.id for k in keys] == list(gdf["patch_id"])
    centers = zip(back["center_lon"], back["center_lat"], strict=True)
    for k, (lon, lat) in zip(keys, centers, strict=True):
        assert k.lonlat_polygon().geom.contains(Point(lon, lat))
    for other in (Grid(zoom=12), UTM):
        with pytest.raises(PlanError, match=r"plan row 0: .* re-run the plan stage"):
            plan.keys_from_plan(back, other)
    with pytest.raises(PlanError, match="run the plan stage first"):
        plan.read_plan(tmp_path / "none.parquet")


def test_make_plan_from_list_keeps_patches_off_data(
    tmp_path: Path, area: tuple[str, Any], wc_items: list[dict[str, Any]]
) -> None:
    w, s, e, n = area[1]
    p = tmp_path / "pts.csv"
    p.write_text(f"lon,lat\n{(w + e) / 2},{(s + n) / 2}\n-44.35,-2.6\n")
    cfg = _config(tmp_path, source="list", list_file=p)
    gdf = plan.make_plan(cfg, [], wc_items)
    assert list(gdf["aoi"]) == ["list", "list"]
    assert sorted(gdf["wc_valid_fraction"]) == [0.0, 1.0]


def test_make_plan_without_data_says_what_to_do(
    tmp_path: Path, wc_items: list[dict[str, Any]]
) -> None:
    with pytest.raises(PlanError, match="min_worldcover_fraction"):
        plan.make_plan(_config(tmp_path), [("far", (0.0, 0.0, 0.01, 0.01))], wc_items)


def test_plan_frame_utm_columns() -> None:
    key = UTM.at(14.42, 46.32)
    cover = {key: PatchCover(0.75, 5, ())}
    gdf = plan.plan_frame([(key, "a")], GridConfig(kind="utm"), TimeConfig(), cover)
    row = gdf.iloc[0]
    assert (row["grid"], row["zone"], row["crs"], row["tile"]) == (
        "utm",
        32633,
        "EPSG:32633",
        "EPSG:32633",
    )
    assert (row["wc_valid_fraction"], row["wc_dominant"]) == (0.75, "grass")


# ---------------------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(st.floats(-180.0, 180.0), st.floats(-85.0, 85.0), st.booleans())
def test_patch_at_point_contains_it(lon: float, lat: float, utm: bool) -> None:
    if utm:
        lat = max(-79.9, min(lat, 83.9))
    key = (UTM if utm else GRID).at(lon, lat)
    poly = key.lonlat_polygon().geom.buffer(1e-9)
    # Across the antimeridian the outline is kept east of it (longitudes up to 180 + x).
    assert poly.contains(Point(lon, lat)) or poly.contains(Point(lon + 360, lat))
    assert poly.bounds[2] - poly.bounds[0] < 10


def test_points_on_the_edge_of_the_world() -> None:
    for lon, lat in ((180.0, 0.0), (-180.0, 0.0), (0.0, 85.0511), (0.0, -85.0511)):
        poly = GRID.at(lon, lat).lonlat_polygon().geom.buffer(1e-9)
        assert poly.contains(Point(lon, lat)) or poly.contains(Point(lon + 360, lat))


def test_utm_patch_across_the_antimeridian() -> None:
    key = UTM.at(179.984375, 1.0)
    left, _, right, _ = key.lonlat_polygon().boundingbox
    assert 179 < left < 180 < right < 181


_POOL = list(GRID.covering((14.40, 46.30, 14.45, 46.34)))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 11)), min_size=1, max_size=len(_POOL)),
    st.one_of(st.none(), st.integers(1, 40)),
    st.integers(0, 2**32),
    st.booleans(),
    st.floats(0, 1),
)
def test_draw_is_a_subset_without_duplicates(
    covers: list[tuple[float, int]], count: int | None, seed: int, strat: bool, floor: float
) -> None:
    cands = [(k, "a") for k in _POOL[: len(covers)]]
    cover = {k: PatchCover(v, d, ()) for (k, _), (v, d) in zip(cands, covers, strict=True)}
    got = plan.draw(cands + cands[:3], cover, count, seed, strat, floor)
    eligible = [c for c in cands if cover[c[0]].valid_fraction >= floor]
    assert set(got) <= set(eligible) and len({k for k, _ in got}) == len(got)
    assert len(got) == (len(eligible) if count is None else min(count, len(eligible)))
