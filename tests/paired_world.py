"""A paired world: the real fixtures, each given a co-located partner derived from it.

The real fixtures hold two Sentinel-2 L2A scenes over Slovenia/Croatia and one ESA WorldCover tile
over Sao Tome; they do not overlap, so no real patch has both an image and its land cover. This
module pairs them, so that ingest can be tested on real pixels of either kind:

- over Sao Tome, synthetic Sentinel-2 scenes rendered (as :mod:`cenlib.world.build` renders them)
  from the *real* WorldCover classes, on one clear and one cloudy date;
- over Slovenia/Croatia, a WorldCover v200-format map derived from the *real* Sentinel-2
  reflectances by simple spectral rules (:func:`spectral_classes`).

The directory is laid out like a synthetic world (``world.json``, ``data/``, ``stac/earth-search``,
``stac/planetary-computer``), so :func:`cenlib.stac.server.serve_world` serves it unchanged; each
API also lists the real items (asset hrefs absolute to the fixture files), which gives one Earth
Search API with real + synthetic Sentinel-2 and one Planetary Computer API with real + derived
WorldCover.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window
from shapely.geometry import box, mapping, shape
from shapely.ops import unary_union

from cenlib.world import items as I
from cenlib.world import sentinel2 as S
from cenlib.world.build import (
    MANIFEST,
    read_manifest,
    rel_href,
    round_geom,
    scene_stats,
    write_json,
    write_worldcover_tile,
)
from cenlib.world.cog import write_sparse_cog
from cenlib.world.landcover import BARE, BUILT, GRASS, TREE, WATER, AreaGrid, area_seed
from cenlib.world.landcover import texture as lc_texture
from cenlib.world.presets import Area
from cenlib.world.tiling import (
    S2_TILE_PX_10M,
    S2Tile,
    s2_tiles_covering,
    worldcover_tile_origin,
    worldcover_tiles,
)

GENERATOR_VERSION = 1  # bump whenever the bytes a seed produces change (invalidates caches)
KIND = "paired"
Json = dict[str, Any]

# Land, sea and the town of Sao Tome in one 0.08 degree square: about 62 % tree, 22 % water,
# 12 % built-up and 4 % grassland in the real WorldCover.
SAO_TOME = Area(
    "sao-tome",
    (6.68, 0.28, 6.76, 0.36),
    "tropical_coast",
    dt.date(2023, 8, 10),
    n_dates=3,
    revisit_days=5,
    planetary_computer=False,
)
# sentinel2.acquisitions() sets cloudiness by date index (CLOUD_TARGETS): index 0 is clear (2 %),
# index 2 is cloudy (55 %); the partly cloudy middle date adds nothing for tests.
SAO_TOME_DATES = (0, 2)
REAL_S2_AREA = "slovenia-croatia"

# Earth Search v1 sets earthsearch:boa_offset_applied when it has already removed the +1000 BOA
# offset from the pixels (the real items here: water NIR ~ 300 DN), even though raster:bands
# still declares offset -0.1. The synthetic scenes share one API with the real ones, so they are
# written the same way (and flagged so).
S2_DN_OFFSET = 0

# Spectral rules, in order of precedence; reflectance thresholds picked on the real scenes
# (August forest NDVI ~0.84 median, crops and meadows lower; water NIR ~0.03).
TREE_NDVI = 0.75
GRASS_NDVI = 0.4
BARE_BRIGHTNESS = 0.12  # mean of blue, green, red: bare soil and rock are brighter than towns
WATER_NIR = 0.05
# SCL classes with no view of the ground: nodata (0), saturated (1), clouds (8, 9) and cirrus (10).
SCL_NO_GROUND = (0, 1, 8, 9, 10)


def _geojson(geom: Any) -> tuple[Json, list[float]]:
    gj = mapping(geom)
    return {"type": gj["type"], "coordinates": round_geom(gj["coordinates"])}, [
        round(v, 7) for v in geom.bounds
    ]


def _asset_path(item_path: Path, item: Json, key: str) -> Path:
    href = str(item["assets"][key]["href"])
    return Path(href) if href.startswith("/") else (item_path.parent / href).resolve()


def _real_items(real: Path, collection: str) -> list[tuple[Path, Json]]:
    found = []
    for p in sorted((real / collection).glob("*/*.json")):
        doc = json.loads(p.read_text(encoding="utf-8"))
        if doc.get("type") == "Feature" and doc.get("collection") == collection:
            found.append((p, doc))
    if not found:
        raise FileNotFoundError(
            f"{real}: no real {collection} item (expected {collection}/<item>/<item>.json as in "
            "tests/fixtures/real); pass the real fixtures directory"
        )
    return found


def _absolute(item_path: Path, item: Json) -> Json:
    """A copy of a real item whose asset hrefs are absolute paths to the fixture files.

    It also gains the link to its collection that the fixture copy lacks (STAC requires one
    when ``collection`` is set), relative as in the items this package writes.
    """
    assets = {
        k: {**a, "href": _asset_path(item_path, item, k).as_posix()}
        for k, a in item["assets"].items()
    }
    links = list(item.get("links", []))
    if not any(ln.get("rel") == "collection" for ln in links):
        cid = item["collection"]
        links.append(
            {
                "rel": "collection",
                "href": f"../../collections/{cid}.json",
                "type": "application/json",
            }
        )
    return {**item, "assets": assets, "links": links}


# --- WorldCover from real Sentinel-2 ------------------------------------------------------------


def spectral_classes(
    blue: npt.NDArray[np.floating[Any]],
    green: npt.NDArray[np.floating[Any]],
    red: npt.NDArray[np.floating[Any]],
    nir: npt.NDArray[np.floating[Any]],
) -> npt.NDArray[np.uint8]:
    """WorldCover codes from surface reflectance: water 80, tree 10, grass 30, bare 60, built 50.

    NaN in any band gives 0 (nodata). Water: NDWI > 0 or dark NIR below blue; then NDVI splits
    tree from grass; the rest is bare land if bright, else built-up.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ndvi = (nir - red) / (nir + red)
        ndwi = (green - nir) / (green + nir)
    brightness = (blue + green + red) / 3
    codes = np.where(brightness >= BARE_BRIGHTNESS, BARE, BUILT).astype(np.uint8)
    codes[ndvi >= GRASS_NDVI] = GRASS
    codes[ndvi >= TREE_NDVI] = TREE
    codes[(ndwi > 0) | ((nir < WATER_NIR) & (blue > nir))] = WATER
    codes[np.isnan(blue) | np.isnan(green) | np.isnan(red) | np.isnan(nir)] = 0
    return codes


def _scene_classes(item_path: Path, item: Json) -> tuple[npt.NDArray[np.uint8], Affine, Any]:
    """WorldCover codes of a real scene on its own grid; nodata where the ground is not seen."""
    refl = []
    for key in ("blue", "green", "red", "nir"):
        with rasterio.open(_asset_path(item_path, item, key)) as ds:
            dn = ds.read(1)
            transform, crs = ds.transform, ds.crs
        refl.append(np.where(dn == 0, np.nan, dn.astype(np.float32) / 10000.0))
    with rasterio.open(_asset_path(item_path, item, "scl")) as ds:
        if ds.transform != transform:
            raise ValueError(f"{item['id']}: scl grid differs from the reflectance bands' grid")
        scl = ds.read(1)
    codes = spectral_classes(*refl)
    codes[np.isin(scl, SCL_NO_GROUND)] = 0
    return codes, transform, crs


def _derive_worldcover(out: Path, real_s2: list[tuple[Path, Json]]) -> list[Json]:
    """Write WorldCover tiles derived from the real scenes; return their items."""
    scenes = [(item, *_scene_classes(p, item)) for p, item in real_s2]
    footprint = unary_union([shape(item["geometry"]) for item, *_ in scenes])
    items: list[Json] = []
    for name in worldcover_tiles(footprint.bounds):
        lon0, lat0 = worldcover_tile_origin(name)
        tile = AreaGrid.for_worldcover_tile(name)
        grid = AreaGrid.for_bbox(footprint.bounds).intersection(tile)
        if grid is None:
            continue
        codes = np.zeros((grid.height, grid.width), np.uint8)
        sources = []
        for item, classes, transform, crs in scenes:
            part_grid = AreaGrid.for_bbox(tuple(item["bbox"])).intersection(grid)
            if part_grid is None:
                continue
            part = np.zeros((part_grid.height, part_grid.width), np.uint8)
            reproject(
                classes,
                part,
                src_transform=transform,
                src_crs=crs,
                dst_transform=part_grid.transform,
                dst_crs="EPSG:4326",
                src_nodata=0,
                dst_nodata=0,
                resampling=Resampling.nearest,
            )
            # Scenes overlap; the first (by id) keeps its pixels, so the result is deterministic.
            dst = codes[grid.slices(part_grid)]
            np.copyto(dst, part, where=dst == 0)
            if part.any():
                sources.append(str(item["id"]))
        if not codes.any():
            continue
        rows, cols = tile.slices(grid)
        path = write_worldcover_tile(
            out,
            name,
            lon0,
            lat0,
            [(rows.start, cols.start, codes)],
            {"source": "derived by cenlib.world.paired from Sentinel-2 L2A " + ", ".join(sources)},
        )
        item_path = (
            out
            / "stac/planetary-computer/items/esa-worldcover"
            / f"ESA_WorldCover_10m_2021_v200_{name}.json"
        )
        geom, bbox = _geojson(footprint.intersection(box(lon0, lat0, lon0 + 3, lat0 + 3)))
        item = I.worldcover_item(name, rel_href(path, item_path), geom, bbox)
        item["properties"]["cenlib:derived_from"] = sources  # not ESA's product: say so
        write_json(item_path, item)
        items.append(item)
    return items


# --- Sentinel-2 from real WorldCover ------------------------------------------------------------


def _scene_stats(scl: npt.NDArray[np.uint8]) -> dict[str, float]:
    return scene_stats([scl], (S2_TILE_PX_10M // 2) ** 2)


def _read_worldcover(
    item_path: Path, item: Json, area: Area
) -> tuple[npt.NDArray[np.uint8], AreaGrid]:
    name = str(item["properties"]["esa_worldcover:product_tile"])
    tile = AreaGrid.for_worldcover_tile(name)
    grid = AreaGrid.for_bbox(area.bbox)
    if tile.intersection(grid) != grid:
        raise ValueError(f"{area.name}: bbox {area.bbox} is not inside WorldCover tile {name}")
    rows, cols = tile.slices(grid)
    with rasterio.open(_asset_path(item_path, item, "map")) as ds:
        codes = ds.read(1, window=Window(cols.start, rows.start, grid.width, grid.height))
    return np.asarray(codes, np.uint8), grid


def _write_scene(
    out: Path,
    seed: int,
    area: Area,
    codes: npt.NDArray[np.uint8],
    tex: npt.NDArray[np.float32],
    grid: AreaGrid,
    acq: S.Acquisition,
    tile: S2Tile,
    win: S.Window,
) -> Json:
    """Render one synthetic scene (all 11 assets) of `area`; write it and its Earth Search item."""
    noise_seed = area_seed(seed, area) ^ zlib.crc32(tile.id.encode())
    refl, scl = S.render(codes, tex, acq, grid, tile, win, noise_seed)
    parts: dict[str, tuple[int, tuple[int, int, npt.NDArray[Any]]]] = {}  # key: (res, part)
    for bi, band in enumerate(S.BANDS):
        if band.res == 10:
            parts[band.key] = (10, (win.row0, win.col0, S.to_dn(refl[bi], S2_DN_OFFSET)))
        else:
            coarse = S.to_dn(S.to_20m(refl[bi], mean=True), S2_DN_OFFSET)
            parts[band.key] = (20, (win.row0 // 2, win.col0 // 2, coarse))
    scl20 = np.ascontiguousarray(S.to_20m(scl, mean=False))
    parts[S.SCL_KEY] = (20, (win.row0 // 2, win.col0 // 2, scl20))
    lon_c = (area.bbox[0] + area.bbox[2]) / 2
    # Local solar time ~10:30, as the builder stamps its scenes.
    when = dt.datetime.combine(acq.date, dt.time(0, 0)) + dt.timedelta(hours=10.5 - lon_c / 15.0)
    when = when.replace(microsecond=(tile.zone * 7919) % 1000 * 1000)
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    tile_poly = shapely.transform(
        box(*tile.bounds).segmentize(1000.0), to_lonlat.transform, interleaved=False
    )
    geom, bbox = _geojson(tile_poly.intersection(box(*area.bbox)))
    scene = I.Scene(
        tile=tile,
        when=when,
        platform="sentinel-2a" if acq.date.toordinal() % 2 else "sentinel-2b",
        baseline="05.00",
        relative_orbit=int((lon_c + 180) / 360 * 143) % 143 + 1,
        geometry=geom,
        bbox=bbox,
        stats=_scene_stats(scl20),
        offset_applied=S2_DN_OFFSET == 0,
    )
    folder = (
        out
        / "data/sentinel-s2-l2a-cogs"
        / f"{tile.zone}/{tile.latitude_band}/{tile.grid_square}"
        / f"{acq.date.year}/{acq.date.month}/{scene.es_id}"
    )
    item_path = out / f"stac/earth-search/items/sentinel-2-l2a/{scene.es_id}.json"
    hrefs = {}
    for key, (res, part) in parts.items():
        path = folder / scene.file_name(key)
        write_sparse_cog(
            path,
            [part],
            tile.shape(res),
            f"EPSG:{tile.epsg}",
            tile.transform(res),
            resampling="nearest" if key == S.SCL_KEY else "average",
        )
        hrefs[key] = rel_href(path, item_path)
    item = I.earth_search_item(scene, hrefs)
    write_json(item_path, item)
    return item


def _render_sentinel2(out: Path, seed: int, real_wc: tuple[Path, Json]) -> list[Json]:
    area = SAO_TOME
    codes, grid = _read_worldcover(*real_wc, area)
    tex = lc_texture(area, seed, grid)
    acqs = S.acquisitions(area, seed, grid)
    items = []
    for tile in s2_tiles_covering(area.bbox):
        win = S.tile_window(tile, area.bbox)
        if win is None:
            continue
        for i in SAO_TOME_DATES:
            items.append(_write_scene(out, seed, area, codes, tex, grid, acqs[i], tile, win))
    return items


# --- the paired world ---------------------------------------------------------------------------


def build_paired(out: Path, real: Path, seed: int = 0) -> Path:
    """Build the paired world from the real fixtures at `real` into `out`; return `out`.

    `out` is replaced if it holds a world (``world.json``); any other non-empty directory is
    refused. Same `real` and `seed` give byte-identical files.
    """
    real = real.resolve()
    real_s2 = _real_items(real, "sentinel-2-l2a")
    real_wc = _real_items(real, "esa-worldcover")
    sao_tome_wc = [
        (p, i) for p, i in real_wc if shape(i["geometry"]).intersects(box(*SAO_TOME.bbox))
    ]
    if not sao_tome_wc:
        raise FileNotFoundError(f"{real}: no real WorldCover item covers {SAO_TOME.bbox}")
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and read_manifest(out) is None):
            raise FileExistsError(
                f"{out}: exists and is not a world (no {MANIFEST}); "
                "choose a new or empty directory for the paired world"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)

    # The halves write disjoint files and mostly wait on GDAL, which releases the GIL.
    with ThreadPoolExecutor(max_workers=2) as pool:
        s2_job = pool.submit(_render_sentinel2, out, seed, sao_tome_wc[0])
        wc_job = pool.submit(_derive_worldcover, out, real_s2)
        synthetic_s2, derived_wc = s2_job.result(), wc_job.result()
    s2_items = synthetic_s2 + [_absolute(p, i) for p, i in real_s2]
    wc_items = derived_wc + [_absolute(p, i) for p, i in real_wc]
    # Real items keep their own file names: their ids never collide with synthetic ones.
    for p, i in real_s2:
        write_json(out / "stac/earth-search/items/sentinel-2-l2a" / p.name, _absolute(p, i))
    for p, i in real_wc:
        write_json(out / "stac/planetary-computer/items/esa-worldcover" / p.name, _absolute(p, i))
    write_json(
        out / "stac/earth-search/collections/sentinel-2-l2a.json",
        I.collection(
            "sentinel-2-l2a",
            "Sentinel-2 L2A: real scenes (Slovenia/Croatia) and synthetic ones rendered from real "
            "WorldCover (Sao Tome), Earth Search v1 dialect",
            s2_items,
            I.ES_EXTENSIONS,
        ),
    )
    write_json(
        out / "stac/planetary-computer/collections/esa-worldcover.json",
        I.collection(
            "esa-worldcover",
            "ESA WorldCover 10 m 2021 v200: a real tile (Sao Tome) and tiles derived from real "
            "Sentinel-2 (Slovenia/Croatia)",
            wc_items,
            I.WC_EXTENSIONS,
        ),
    )
    s2_bounds = unary_union([shape(i["geometry"]) for _, i in real_s2]).bounds
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "kind": KIND,
        "seed": seed,
        "real": str(real),
        "areas": [
            {
                "name": SAO_TOME.name,
                "bbox": list(SAO_TOME.bbox),
                "sentinel2": "synthetic",
                "worldcover": "real",
                "dates": [SAO_TOME.dates()[i].isoformat() for i in SAO_TOME_DATES],
            },
            {
                "name": REAL_S2_AREA,
                "bbox": [round(v, 7) for v in s2_bounds],
                "sentinel2": "real",
                "worldcover": "derived",
                "dates": sorted({str(i["properties"]["datetime"])[:10] for _, i in real_s2}),
            },
        ],
        "catalogs": {"earth-search": ["sentinel-2-l2a"], "planetary-computer": ["esa-worldcover"]},
        "items": {
            "sentinel-2-l2a": {
                "synthetic": [i["id"] for i in synthetic_s2],
                "real": [i["id"] for _, i in real_s2],
            },
            "esa-worldcover": {
                "derived": [i["id"] for i in derived_wc],
                "real": [i["id"] for _, i in real_wc],
            },
        },
        "counts": {
            "worldcover_tiles": len(wc_items),
            "sentinel2_scenes": len(s2_items),
            "planetary_computer_scenes": 0,
        },
    }
    # Written last: its presence marks a complete build (see is_current).
    write_json(out / MANIFEST, manifest)
    return out


def is_current(out: Path, real: Path, seed: int) -> bool:
    """Whether `out` holds a complete paired world of `real` and `seed` made by this generator."""
    m = read_manifest(out)
    return bool(
        m
        and m.get("kind") == KIND
        and m.get("seed") == seed
        and m.get("real") == str(real.resolve())
        and m.get("generator_version") == GENERATOR_VERSION
    )


def ensure_paired(out: Path, real: Path, seed: int = 0) -> Path:
    """Return `out`, building the paired world there first unless a current build is there."""
    if not is_current(out, real, seed):
        build_paired(out, real, seed)
    return out
