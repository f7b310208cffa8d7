"""Stage *plan*: which patches a run builds, written once as a GeoParquet table.

:func:`make_plan` reads the config, lists candidate patches (every patch covering the areas, or
an explicit list file), estimates WorldCover coverage from the COG overviews, draws the patches
and returns the plan. Every step is a pure function; the job wraps them.

Plan columns (one row per patch, in spatially local Z-order so consecutive rows are neighbours):

==================  ===================================================================
``patch_id``        grid id (``{col}_{row}_patch{r}{c}`` or ``utm{epsg}_{col}_{row}``)
``grid``            ``chatearthnet`` or ``utm``
``zone``            zoom level (chatearthnet) or EPSG code (utm)
``patch_size``      pixels per patch side
``crs``             CRS of the patch pixels, e.g. ``EPSG:3857``
``tile``            ChatEarthNet tile ``{col}_{row}``, or ``EPSG:{zone}`` on utm
``aoi``             name of the area the patch was drawn from (``list`` for list files)
``center_lon/lat``  patch centre in degrees
``time_start/end``  Sentinel-2 search window, ISO dates
``wc_valid_fraction``  estimated share of the patch with WorldCover data (0..1)
``wc_dominant``     ChatEarthNet name of the estimated most common class (``background`` if none)
``geometry``        patch outline, EPSG:4326
==================  ===================================================================
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pystac
import rasterio
from pyproj import Transformer
from rasterio.windows import Window
from shapely.geometry import shape
from shapely.prepared import prep

from cenlib.classes import CLASS_NAMES, NUM_CLASSES, worldcover_to_index
from cenlib.config import BBox, GridConfig, RunConfig, TimeConfig
from cenlib.errors import CenError
from cenlib.grid import Grid, GridError, PatchKey, grid_for, spatial_order

SAMPLES = 32  # points per patch side: about 80 m apart on 10 m patches, fractions within ~2 %
BATCH = 1024  # patches sampled together: bounds memory to ~50 MB, one Z-order block of reads
LAT_LIMITS = {"chatearthnet": (-85.0511, 85.0511), "utm": (-80.0, 84.0)}
COLUMNS = (
    *("patch_id", "grid", "zone", "patch_size", "crs", "tile", "aoi", "center_lon", "center_lat"),
    *("time_start", "time_end", "wc_valid_fraction", "wc_dominant", "geometry"),
)
Candidate = tuple[PatchKey, str]  # a patch and the name of its area


class PlanError(CenError, ValueError):
    """A patch list, plan file or WorldCover item the plan cannot use; says where and how to fix."""


@dataclass(frozen=True)
class PatchCover:
    """WorldCover estimate of one patch from a coarse sample."""

    valid_fraction: float  # share of samples where WorldCover has a class
    dominant: int  # ChatEarthNet index of the most common class, 0 if none
    fractions: tuple[float, ...]  # per ChatEarthNet class index, background included; sums to 1


NO_COVER = PatchCover(0.0, 0, ())


# ---------------------------------------------------------------------------- patch lists


def patches_from_list(path: Path, grid: Grid) -> list[PatchKey]:
    """Patches named by a list file, deduplicated in first-seen order.

    ``.csv``: a column ``id`` (or ``patch_id``), or columns ``lon`` and ``lat`` in degrees.
    ``.geojson``/``.json``: a FeatureCollection; a Point names the patch holding it, a Polygon
    every patch its area touches. Anything else: text, one id per line (``#`` starts a comment).
    """
    if not path.is_file():
        raise PlanError(f"{path}: patch list not found; set plan.list_file to an existing file")
    text = path.read_text(encoding="utf-8-sig")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        keys = _from_csv(path, text, grid)
    elif suffix in (".geojson", ".json"):
        keys = _from_geojson(path, text, grid)
    else:
        keys = [
            _key(path, f"line {n}", line.strip(), grid)
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not keys:
        raise PlanError(f"{path}: lists no patches; add patch ids or points")
    return list(dict.fromkeys(keys))


def _key(path: Path, where: str, patch_id: str, grid: Grid) -> PatchKey:
    try:
        return grid.key(patch_id)
    except GridError as e:
        raise PlanError(f"{path}: {where}: {e}; correct the id or remove it") from e


def _point(path: Path, where: str, lon: Any, lat: Any, grid: Grid) -> PatchKey:
    # Web Mercator stops at +-85.0511 degrees, the UTM zones at 80 S and 84 N.
    south, north = LAT_LIMITS[grid.kind]
    for name, value, lo, hi in (("lon", lon, -180.0, 180.0), ("lat", lat, south, north)):
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not lo <= v <= hi:
            raise PlanError(
                f"{path}: {where}: {name} {value!r} is not a number of degrees in "
                f"{lo:g}..{hi:g} (the {grid.kind} grid); give lon/lat in EPSG:4326 degrees"
            )
    return grid.at(float(lon), float(lat))


def _from_csv(path: Path, text: str, grid: Grid) -> list[PatchKey]:
    reader = csv.DictReader(io.StringIO(text))
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    id_col = cols.get("id", cols.get("patch_id"))
    lon_col = cols.get("lon", cols.get("longitude"))
    lat_col = cols.get("lat", cols.get("latitude"))
    if id_col is None and (lon_col is None or lat_col is None):
        raise PlanError(
            f"{path}: line 1: no 'id' column and no 'lon' and 'lat' columns "
            f"(header: {reader.fieldnames}); add a header 'id', or 'lon,lat' in degrees"
        )
    keys = []
    for row in reader:
        where = f"line {reader.line_num}"
        if id_col is not None:
            keys.append(_key(path, where, (row[id_col] or "").strip(), grid))
        else:
            keys.append(_point(path, where, row[lon_col], row[lat_col], grid))
    return keys


def _from_geojson(path: Path, text: str, grid: Grid) -> list[PatchKey]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise PlanError(f"{path}: not a GeoJSON FeatureCollection; wrap the points in one")
    keys: list[PatchKey] = []
    for i, feature in enumerate(doc.get("features") or []):
        where = f"feature {i}"
        g = (feature or {}).get("geometry") or {}
        kind, coords = g.get("type"), g.get("coordinates") or []
        if kind not in ("Point", "MultiPoint", "Polygon", "MultiPolygon"):
            raise PlanError(
                f"{path}: {where}: geometry type {kind!r} is not supported; "
                "use Point, MultiPoint, Polygon or MultiPolygon features"
            )
        try:
            if kind == "Point":
                keys.append(_point(path, where, coords[0], coords[1], grid))
            elif kind == "MultiPoint":
                keys += [_point(path, where, c[0], c[1], grid) for c in coords]
            else:
                area = shape(g)
                hit = prep(area).intersects
                keys += [k for k in grid.covering(area.bounds) if hit(k.lonlat_polygon().geom)]
        except PlanError:
            raise
        except (TypeError, IndexError, ValueError, AttributeError) as e:
            raise PlanError(
                f"{path}: {where}: bad {kind} coordinates {coords!r} ({e}); "
                "write [lon, lat] pairs in degrees"
            ) from e
    return keys


def candidates(aois: Sequence[tuple[str, BBox]], grid: Grid) -> list[Candidate]:
    """Every patch covering each named lon/lat bbox; a patch in several areas keeps the first."""
    seen: dict[PatchKey, str] = {}
    for name, bbox in aois:
        for key in grid.covering(bbox):
            seen.setdefault(key, name)
    return list(seen.items())


# ---------------------------------------------------------------------------- WorldCover


def worldcover_summary(
    keys: Sequence[PatchKey], wc_items: Sequence[dict[str, Any]]
) -> dict[PatchKey, PatchCover]:
    """Estimate WorldCover coverage of each patch from SAMPLES x SAMPLES points.

    Patches go in spatially sorted batches of BATCH; each item's raster is read once per batch
    that touches it, for the window the whole batch needs, decimated to about the sample
    spacing so that GDAL serves it from the COG overviews. Points outside every item count as
    no data.
    """
    uniq = sorted(dict.fromkeys(keys), key=spatial_order)
    out: dict[PatchKey, PatchCover] = {}
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for i in range(0, len(uniq), BATCH):
            batch = uniq[i : i + BATCH]
            lon, lat = _sample_points(batch)
            codes = np.zeros(lon.shape, np.uint8)
            # Sample spacing in degrees of latitude: the tighter direction on a lon/lat raster.
            spacing = float(np.median(np.ptp(lat, axis=1))) / (SAMPLES - 1)
            for item in wc_items:
                _sample_item(item, lon.ravel(), lat.ravel(), codes.reshape(-1), spacing)
            out.update(zip(batch, map(_cover, codes), strict=True))
    return out


def _sample_points(keys: list[PatchKey]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Lon and lat of a regular grid of points inside each patch, shape (len(keys), SAMPLES**2)."""
    u = (np.arange(SAMPLES) + 0.5) / SAMPLES
    lon = np.empty((len(keys), SAMPLES * SAMPLES))
    lat = np.empty_like(lon)
    by_crs: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_crs[str(k.crs)].append(i)
    for crs, idx in by_crs.items():
        xs, ys = [], []
        for i in idx:
            gb = keys[i].geobox
            a, (h, w) = gb.affine, gb.shape
            c, r = np.meshgrid(u * w, u * h)
            xs.append((a.c + a.a * c + a.b * r).ravel())
            ys.append((a.f + a.d * c + a.e * r).ravel())
        tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
        lon[idx], lat[idx] = tr.transform(np.stack(xs), np.stack(ys))
    return lon, lat


def _asset_href(item: dict[str, Any]) -> str:
    ident = item.get("id", "?")
    try:
        asset = pystac.Item.from_dict(item).assets["map"]
    except KeyError as e:
        raise PlanError(
            f"WorldCover item {ident}: no asset 'map'; "
            "use the esa-worldcover collection in its Planetary Computer shape"
        ) from e
    href = asset.get_absolute_href()
    if href is None:
        raise PlanError(
            f"WorldCover item {ident}: asset 'map' href {asset.href!r} is relative and the item "
            "has no 'self' link; load items with pystac.Item.from_file or make hrefs absolute"
        )
    if href.startswith("file://"):
        return unquote(urlparse(href).path)
    return href


def _sample_item(
    item: dict[str, Any],
    lon: npt.NDArray[np.float64],
    lat: npt.NDArray[np.float64],
    codes: npt.NDArray[np.uint8],
    spacing: float,
) -> None:
    """Fill ``codes`` (in place) at the points this item's raster holds."""
    w, s, e, n = item.get("bbox") or (-180.0, -90.0, 180.0, 90.0)
    sel = np.flatnonzero((codes == 0) & (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n))
    if sel.size == 0:
        return
    href = _asset_href(item)
    try:
        with rasterio.open(href) as ds:
            t = ds.transform
            col, row = (lon[sel] - t.c) / t.a, (lat[sel] - t.f) / t.e
            inside = (col >= 0) & (col < ds.width) & (row >= 0) & (row < ds.height)
            sel, col, row = sel[inside], col[inside], row[inside]
            if sel.size == 0:
                return
            # A power-of-two factor on a window aligned to it maps onto an overview level
            # pixel for pixel, so GDAL reads that level and never level 0.
            f = 2 ** max(0, int(math.log2(max(spacing / abs(t.e), 1.0))))
            c0, r0 = int(col.min()) // f * f, int(row.min()) // f * f
            width = min(ds.width, (int(col.max()) // f + 1) * f) - c0
            height = min(ds.height, (int(row.max()) // f + 1) * f) - r0
            shape_ = (max(1, math.ceil(height / f)), max(1, math.ceil(width / f)))
            arr = ds.read(1, window=Window(c0, r0, width, height), out_shape=shape_)
    except rasterio.errors.RasterioIOError as err:
        raise PlanError(
            f"WorldCover item {item.get('id', '?')}: cannot read asset 'map' at {href}: {err}"
        ) from err
    ri = np.minimum(((row - r0) * shape_[0] / height).astype(np.intp), shape_[0] - 1)
    ci = np.minimum(((col - c0) * shape_[1] / width).astype(np.intp), shape_[1] - 1)
    codes[sel] = arr[ri, ci]


def _cover(codes: npt.NDArray[np.uint8]) -> PatchCover:
    counts = np.bincount(worldcover_to_index(codes), minlength=NUM_CLASSES)
    valid = codes.size - int(counts[0])  # codes outside the legend count as no data
    dominant = int(np.argmax(counts[1:])) + 1 if valid else 0
    fractions = tuple(float(v) for v in counts / codes.size)
    return PatchCover(valid / codes.size, dominant, fractions)


# ---------------------------------------------------------------------------- drawing


def draw(
    cands: Sequence[Candidate],
    cover: dict[PatchKey, PatchCover],
    count: int | None,
    seed: int,
    stratify: bool = False,
    min_worldcover_fraction: float = 0.0,
) -> list[Candidate]:
    """Keep candidates with enough WorldCover data, draw ``count`` of them, in spatial order.

    The draw depends only on the set of candidates and the seed, not on their order. With
    ``stratify`` each dominant class gets an equal quota; quota a class cannot fill goes to
    the others. A patch missing from ``cover`` counts as having no WorldCover data.
    """
    pool = dict(cands[::-1])  # reversed so the first area of a duplicated key wins
    ok = sorted(
        (k, a)
        for k, a in pool.items()
        if cover.get(k, NO_COVER).valid_fraction >= min_worldcover_fraction
    )
    if count is not None and count < len(ok):
        rng = np.random.default_rng(seed)
        if stratify:
            groups: dict[int, list[Candidate]] = defaultdict(list)
            for c in ok:
                groups[cover.get(c[0], NO_COVER).dominant].append(c)
            quota = _quotas({cls: len(g) for cls, g in groups.items()}, count)
            picks = {
                cls: rng.permutation(len(g))[: quota[cls]] for cls, g in sorted(groups.items())
            }
            ok = [groups[cls][i] for cls, idx in picks.items() for i in idx]
        else:
            ok = [ok[i] for i in rng.choice(len(ok), size=count, replace=False)]
    return sorted(ok, key=lambda c: spatial_order(c[0]))


def _quotas(available: dict[int, int], count: int) -> dict[int, int]:
    """Equal shares of ``count``; smallest classes first so their shortfall moves to the rest."""
    quota, left = {}, count
    order = sorted(available, key=lambda cls: (available[cls], cls))
    for i, cls in enumerate(order):
        quota[cls] = min(available[cls], left // (len(order) - i))
        left -= quota[cls]
    return quota


# ---------------------------------------------------------------------------- the table


def plan_frame(
    selected: Sequence[Candidate],
    grid_cfg: GridConfig,
    time_cfg: TimeConfig,
    cover: dict[PatchKey, PatchCover],
) -> gpd.GeoDataFrame:
    """The plan table (columns in the module docstring), rows in the order given."""
    start, end = time_cfg.start.isoformat(), time_cfg.end.isoformat()
    rows = []
    for key, aoi in selected:
        pc = cover.get(key, NO_COVER)
        lon, lat = key.center_lonlat()
        fields = (key.id, key.grid, key.zone, grid_cfg.patch_size, str(key.crs), key.tile, aoi)
        rows.append((*fields, lon, lat, start, end, pc.valid_fraction, CLASS_NAMES[pc.dominant]))
    geometry = [key.lonlat_polygon().geom for key, _ in selected]
    return gpd.GeoDataFrame(rows, columns=COLUMNS[:-1], geometry=geometry, crs="EPSG:4326")


def write_plan(gdf: gpd.GeoDataFrame, path: Path) -> None:
    """Write the plan as GeoParquet; atomic, so a reader never sees half a plan."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    gdf.to_parquet(tmp, index=False)
    tmp.replace(path)


def read_plan(path: Path) -> gpd.GeoDataFrame:
    """Read a plan written by :func:`write_plan`, checking its columns."""
    if not path.is_file():
        raise PlanError(f"{path}: plan not found; run the plan stage first")
    gdf = gpd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in gdf.columns]
    if missing:
        raise PlanError(f"{path}: not a plan, columns {missing} missing; re-run the plan stage")
    return gdf


def keys_from_plan(gdf: gpd.GeoDataFrame, grid: Grid) -> list[PatchKey]:
    """The patch keys of a plan, checked against the grid the run uses."""
    keys = []
    rows = zip(gdf["patch_id"], gdf["grid"], gdf["zone"], strict=True)
    for i, (pid, kind, zone) in enumerate(rows):
        try:
            key = grid.key(str(pid))
            ok = kind == grid.kind and (kind == "utm" or key.zone == int(zone))
        except GridError:
            ok = False
        if not ok:
            raise PlanError(
                f"plan row {i}: patch {pid} is on grid {kind} zone {zone}, the run uses "
                f"{grid.kind} zoom {grid.zoom}; re-run the plan stage with this grid config"
            )
        keys.append(key)
    return keys


def make_plan(
    cfg: RunConfig, aois: Sequence[tuple[str, BBox]], wc_items: Sequence[dict[str, Any]]
) -> gpd.GeoDataFrame:
    """The plan of a run: candidates (areas or list) -> WorldCover estimate -> draw -> table.

    Patches of a list file are kept even where WorldCover has no data (they were asked for by
    name; their ``wc_valid_fraction`` says so), but ``count`` and ``stratify`` still apply.
    """
    grid, p = grid_for(cfg.grid), cfg.plan
    if p.source == "list":
        assert p.list_file is not None  # the config validator guarantees it
        cands = [(k, "list") for k in patches_from_list(p.list_file, grid)]
        floor = 0.0
    else:
        cands, floor = candidates(aois, grid), p.min_worldcover_fraction
    cover = worldcover_summary([k for k, _ in cands], wc_items)
    selected = draw(cands, cover, p.count, p.seed, p.stratify, floor)
    if not selected:
        raise PlanError(
            f"no patch of {len(cands)} candidate(s) has WorldCover data over "
            f"{floor:.0%} of its area; check the areas and the WorldCover search, "
            "or lower plan.min_worldcover_fraction"
        )
    return plan_frame(selected, cfg.grid, cfg.time, cover)
