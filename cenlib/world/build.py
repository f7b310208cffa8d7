"""Build a synthetic world: WorldCover tiles, Sentinel-2 scenes and their STAC records.

Layout of a world directory (relocatable: item hrefs are relative to the item file)::

    world.json                                  manifest: preset, seed, areas, counts
    data/esa-worldcover/v200/2021/map/ESA_WorldCover_10m_2021_v200_N45E009_Map.tif
    data/sentinel-s2-l2a-cogs/32/T/QS/2021/7/S2A_32TQS_20210703_0_L2A/B02.tif ...
    stac/earth-search/collections/sentinel-2-l2a.json, items/sentinel-2-l2a/*.json
    stac/planetary-computer/collections/{sentinel-2-l2a,esa-worldcover}.json, items/...
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import zlib
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from pyproj import Transformer
from shapely.geometry import box, mapping
from shapely.ops import unary_union

from cenlib.world import items as I
from cenlib.world import sentinel2 as S
from cenlib.world.cog import write_sparse_cog
from cenlib.world.landcover import WC_RES, AreaGrid, area_seed, paint, texture
from cenlib.world.presets import Area, preset_areas
from cenlib.world.tiling import (
    S2_TILE_PX_10M,
    S2Tile,
    s2_tile,
    s2_tiles_covering,
    worldcover_tile_origin,
    worldcover_tiles,
)

GENERATOR_VERSION = 3  # bump whenever the bytes a seed produces change (invalidates caches)
MANIFEST = "world.json"
CATALOGS = ("earth-search", "planetary-computer")
Progress = Callable[[str, int], None]  # (description of the step just done, steps it counts for)


@dataclass
class _AreaData:
    area: Area
    codes: npt.NDArray[np.uint8]
    grid: AreaGrid
    tex: npt.NDArray[np.float32]
    acqs: list[S.Acquisition]


def write_json(path: Path, obj: Any) -> None:
    """Write a STAC/manifest JSON file (parents created), in the world's one formatting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def rel_href(target: Path, start: Path) -> str:
    """`target` relative to the folder of the JSON file `start`, as a STAC href."""
    return Path(os.path.relpath(target, start.parent)).as_posix()


def round_geom(g: Any) -> Any:
    """GeoJSON coordinates rounded to 1e-7 degree (about 1 cm), so files are stable."""
    if isinstance(g, (list, tuple)):
        return [round_geom(v) for v in g]
    return round(float(g), 7) if isinstance(g, float) else g


def _footprint(tile_poly_lonlat: Any, areas: list[Area]) -> tuple[dict[str, Any], list[float]]:
    geom = tile_poly_lonlat.intersection(unary_union([box(*a.bbox) for a in areas]))
    gj = mapping(geom)
    return {"type": gj["type"], "coordinates": round_geom(gj["coordinates"])}, [
        round(v, 7) for v in geom.bounds
    ]


def _tile_polygon_lonlat(tile: S2Tile) -> Any:
    poly = box(*tile.bounds).segmentize(1000.0)
    tr = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    return shapely.transform(poly, tr.transform, interleaved=False)


def write_worldcover_tile(
    world: Path,
    name: str,
    lon0: float,
    lat0: float,
    parts: list[tuple[int, int, Any]],
    tags: dict[str, str] | None = None,
) -> Path:
    """One sparse WorldCover v200 tile COG (3 x 3 degrees from lon0/lat0) at its archive path."""
    path = world / f"data/esa-worldcover/v200/2021/map/ESA_WorldCover_10m_2021_v200_{name}_Map.tif"
    write_sparse_cog(
        path,
        parts,
        (36000, 36000),
        "EPSG:4326",
        Affine(WC_RES, 0, lon0, 0, -WC_RES, lat0 + 3),
        resampling="nearest",
        tags={
            "product_tile": name,
            "product_version": "V2.0.0",
            "time_start": "2021-01-01T00:00:00Z",
            "time_end": "2021-12-31T23:59:59Z",
            **(tags or {}),
        },
    )
    return path


def _write_worldcover(world: Path, areas: list[_AreaData], pc_items: list[I.Json]) -> None:
    by_tile: dict[str, list[_AreaData]] = defaultdict(list)
    for ad in areas:
        for name in worldcover_tiles(ad.area.bbox):
            by_tile[name].append(ad)
    for name in sorted(by_tile):
        lon0, lat0 = worldcover_tile_origin(name)
        tile = AreaGrid.for_worldcover_tile(name)
        parts = []
        for ad in by_tile[name]:
            common = ad.grid.intersection(tile)
            if common is None:
                continue
            rows, cols = tile.slices(common)
            sub = np.ascontiguousarray(ad.codes[ad.grid.slices(common)])
            parts.append((rows.start, cols.start, sub))
        path = write_worldcover_tile(world, name, lon0, lat0, parts)
        tile_box = box(lon0, lat0, lon0 + 3, lat0 + 3)
        geom, bbox = _footprint(tile_box, [ad.area for ad in by_tile[name]])
        item_path = (
            world
            / "stac/planetary-computer/items/esa-worldcover"
            / f"ESA_WorldCover_10m_2021_v200_{name}.json"
        )
        item = I.worldcover_item(name, rel_href(path, item_path), geom, bbox)
        write_json(item_path, item)
        pc_items.append(item)


def scene_stats(scl: list[npt.NDArray[np.uint8]], tile_px: int) -> dict[str, float]:
    """eo:cloud_cover and the s2:*_percentage properties from a scene's SCL parts."""
    counts = np.zeros(256, np.int64)
    for a in scl:
        counts += np.bincount(a.ravel(), minlength=256)
    valid = int(counts[1:].sum()) or 1

    def pct(*values: int) -> float:
        return round(100.0 * float(counts[list(values)].sum()) / valid, 6)

    return {
        "eo:cloud_cover": pct(*S.SCL_CLOUDY),
        "s2:nodata_pixel_percentage": round(100.0 * (1 - valid / tile_px), 6),
        "s2:cloud_shadow_percentage": pct(S.SCL_SHADOW),
        "s2:vegetation_percentage": pct(S.SCL_VEG),
        "s2:not_vegetated_percentage": pct(S.SCL_NOT_VEG),
        "s2:water_percentage": pct(S.SCL_WATER),
        "s2:medium_proba_clouds_percentage": pct(S.SCL_CLOUD_MED),
        "s2:high_proba_clouds_percentage": pct(S.SCL_CLOUD_HIGH),
        "s2:thin_cirrus_percentage": pct(S.SCL_CIRRUS),
        "s2:snow_ice_percentage": pct(S.SCL_SNOW),
    }


def _write_scene(
    world: Path,
    seed: int,
    tile: S2Tile,
    day: dt.date,
    members: list[tuple[_AreaData, S.Window, S.Acquisition]],
) -> tuple[I.Json, I.Json | None]:
    """Render and write one Sentinel-2 scene (all 11 assets); return its ES and PC items."""
    by_asset: dict[str, list[tuple[int, int, Any]]] = defaultdict(list)
    # Scenes only Earth Search holds have their DN offset removed (earthsearch:boa_offset_applied),
    # as many real ones do; scenes shared with the PC dialect keep it (the files are shared).
    offset_applied = not any(m[0].area.planetary_computer for m in members)
    dn_offset = 0 if offset_applied else S.BOA_OFFSET_DN
    scl20: list[npt.NDArray[np.uint8]] = []
    for ad, win, acq in members:
        refl, scl = S.render(
            ad.codes,
            ad.tex,
            acq,
            ad.grid,
            tile,
            win,
            area_seed(seed, ad.area) ^ zlib.crc32(tile.id.encode()),
        )
        for bi, band in enumerate(S.BANDS):
            if band.res == 10:
                by_asset[band.key].append((win.row0, win.col0, S.to_dn(refl[bi], dn_offset)))
            else:
                coarse = S.to_20m(refl[bi], mean=True)
                by_asset[band.key].append(
                    (win.row0 // 2, win.col0 // 2, S.to_dn(coarse, dn_offset))
                )
        s20 = np.ascontiguousarray(S.to_20m(scl, mean=False))
        by_asset[S.SCL_KEY].append((win.row0 // 2, win.col0 // 2, s20))
        scl20.append(s20)
    # Local solar time ~10:30 at the scene's centre.
    lon_c = float(np.mean([np.mean(m[0].area.bbox[::2]) for m in members]))
    when = dt.datetime.combine(day, dt.time(0, 0)) + dt.timedelta(hours=10.5 - lon_c / 15.0)
    when = when.replace(microsecond=(tile.zone * 7919) % 1000 * 1000)
    areas = [m[0].area for m in members]
    geom, bbox = _footprint(_tile_polygon_lonlat(tile), areas)
    scene = I.Scene(
        tile=tile,
        when=when,
        platform="sentinel-2a" if day.toordinal() % 2 else "sentinel-2b",
        baseline="05.00",
        relative_orbit=int((lon_c + 180) / 360 * 143) % 143 + 1,
        geometry=geom,
        bbox=bbox,
        stats=scene_stats(scl20, (S2_TILE_PX_10M // 2) ** 2),
        offset_applied=offset_applied,
    )
    folder = (
        world
        / "data/sentinel-s2-l2a-cogs"
        / f"{tile.zone}/{tile.latitude_band}/{tile.grid_square}"
        / f"{day.year}/{day.month}/{scene.es_id}"
    )
    es_path = world / f"stac/earth-search/items/sentinel-2-l2a/{scene.es_id}.json"
    pc_path = world / f"stac/planetary-computer/items/sentinel-2-l2a/{scene.pc_id}.json"
    hrefs_es, hrefs_pc = {}, {}
    for key, parts in by_asset.items():
        res = 20 if key == S.SCL_KEY or next(b.res for b in S.BANDS if b.key == key) == 20 else 10
        path = folder / scene.file_name(key)
        write_sparse_cog(
            path,
            parts,
            tile.shape(res),
            f"EPSG:{tile.epsg}",
            tile.transform(res),
            resampling="nearest" if key == S.SCL_KEY else "average",
        )
        hrefs_es[key] = rel_href(path, es_path)
        hrefs_pc[key] = rel_href(path, pc_path)
    es_item = I.earth_search_item(scene, hrefs_es)
    write_json(es_path, es_item)
    pc_item = None
    if any(a.planetary_computer for a in areas):
        pc_item = I.planetary_computer_item(scene, hrefs_pc)
        write_json(pc_path, pc_item)
    return es_item, pc_item


def count_steps(preset: str) -> int:
    """How many progress steps :func:`build_world` reports for a preset."""
    return len(preset_areas(preset)) * 2 + len(_scene_plan(preset_areas(preset)))


@lru_cache(maxsize=8)  # count_steps and build_world both need it; tiling lookups are not free
def _scene_plan(areas: tuple[Area, ...]) -> dict[tuple[str, dt.date], list[tuple[Area, S.Window]]]:
    plan: dict[tuple[str, dt.date], list[tuple[Area, S.Window]]] = defaultdict(list)
    for a in areas:
        for tile in s2_tiles_covering(a.bbox):
            win = S.tile_window(tile, a.bbox)
            if win is None:
                continue
            for day in a.dates():
                plan[(tile.id, day)].append((a, win))
    return dict(sorted(plan.items()))


def build_world(
    out: Path,
    preset: str = "demo",
    seed: int = 0,
    progress: Progress | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Build the world `preset` with `seed` into `out` (replaced if it exists); return its manifest.

    Same preset and seed give byte-identical files.
    """
    report = progress or (lambda _msg, _n: None)
    areas = preset_areas(preset)
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and read_manifest(out) is None):
            raise FileExistsError(
                f"{out}: exists and is not a synthetic world (no world.json); "
                "choose a new or empty directory for --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data: dict[str, _AreaData] = {}
    for a in areas:
        codes, grid = paint(a, seed)
        data[a.name] = _AreaData(
            a, codes, grid, texture(a, seed, grid), S.acquisitions(a, seed, grid)
        )
        report(f"land cover {a.name}", 1)
    pc_items: list[I.Json] = []
    _write_worldcover(out, list(data.values()), pc_items)
    report("WorldCover tiles", len(areas))
    es_items: list[I.Json] = []
    plan = _scene_plan(areas)

    def one(key: tuple[str, dt.date]) -> tuple[I.Json, I.Json | None]:
        tile_id, day = key
        members = []
        for a, win in plan[key]:
            ad = data[a.name]
            acq = next(q for q in ad.acqs if q.date == day)
            members.append((ad, win, acq))
        result = _write_scene(out, seed, s2_tile(tile_id), day, members)
        report(f"scene {tile_id} {day}", 1)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for es, pc in pool.map(one, list(plan)):
            es_items.append(es)
            if pc is not None:
                pc_items.append(pc)
    pc_s2 = [i for i in pc_items if i["collection"] == "sentinel-2-l2a"]
    pc_wc = [i for i in pc_items if i["collection"] == "esa-worldcover"]
    write_json(
        out / "stac/earth-search/collections/sentinel-2-l2a.json",
        I.collection(
            "sentinel-2-l2a",
            "Sentinel-2 L2A (synthetic, Earth Search v1 dialect)",
            es_items,
            I.ES_EXTENSIONS,
        ),
    )
    write_json(
        out / "stac/planetary-computer/collections/sentinel-2-l2a.json",
        I.collection(
            "sentinel-2-l2a",
            "Sentinel-2 L2A (synthetic, Planetary Computer dialect)",
            pc_s2,
            I.PC_EXTENSIONS,
        ),
    )
    write_json(
        out / "stac/planetary-computer/collections/esa-worldcover.json",
        I.collection(
            "esa-worldcover", "ESA WorldCover 10 m 2021 v200 (synthetic)", pc_wc, I.WC_EXTENSIONS
        ),
    )
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "areas": [
            {
                "name": a.name,
                "bbox": list(a.bbox),
                "biome": a.biome,
                "dates": [d.isoformat() for d in a.dates()],
                "planetary_computer": a.planetary_computer,
            }
            for a in areas
        ],
        "catalogs": {
            "earth-search": ["sentinel-2-l2a"],
            "planetary-computer": ["sentinel-2-l2a", "esa-worldcover"],
        },
        "counts": {
            "worldcover_tiles": len(pc_wc),
            "sentinel2_scenes": len(es_items),
            "planetary_computer_scenes": len(pc_s2),
        },
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def read_manifest(world: Path) -> dict[str, Any] | None:
    p = world / MANIFEST
    if not p.is_file():
        return None
    result: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return result


def is_current(out: Path, preset: str, seed: int) -> bool:
    """Whether `out` holds a complete world of `preset` and `seed` made by this generator."""
    m = read_manifest(out)
    return bool(
        m
        and m.get("preset") == preset
        and m.get("seed") == seed
        and m.get("generator_version") == GENERATOR_VERSION
    )


def ensure_world(
    out: Path, preset: str, seed: int, progress: Progress | None = None
) -> dict[str, Any]:
    """Return the manifest of the world at `out`, building it first unless already there."""
    if not is_current(out, preset, seed):
        return build_world(out, preset, seed, progress)
    m = read_manifest(out)
    assert m is not None
    return m
