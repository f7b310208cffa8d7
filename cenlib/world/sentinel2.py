"""Sentinel-2 L2A pixels rendered from the synthetic land cover.

Reflectance follows per-class spectra with texture and noise, so an image shows what its land
cover says. Clouds and their shadows differ per acquisition and agree with the SCL band.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import Resampling, reproject, transform_bounds

from cenlib.world import landcover as L
from cenlib.world.landcover import AreaGrid, area_seed, canvas_at
from cenlib.world.noise import F32
from cenlib.world.presets import Area
from cenlib.world.tiling import S2Tile


@dataclass(frozen=True)
class Band:
    key: str  # Earth Search v1 asset key
    pc_key: str  # Planetary Computer asset key
    common_name: str
    description: str
    center: float  # micrometres
    fwhm: float
    res: int  # metres


BANDS: tuple[Band, ...] = (
    Band("blue", "B02", "blue", "Blue (band 2)", 0.49, 0.098, 10),
    Band("green", "B03", "green", "Green (band 3)", 0.56, 0.045, 10),
    Band("red", "B04", "red", "Red (band 4)", 0.665, 0.038, 10),
    Band("nir", "B08", "nir", "NIR 1 (band 8)", 0.842, 0.145, 10),
    Band("rededge1", "B05", "rededge", "Red edge 1 (band 5)", 0.704, 0.019, 20),
    Band("rededge2", "B06", "rededge", "Red edge 2 (band 6)", 0.74, 0.018, 20),
    Band("rededge3", "B07", "rededge", "Red edge 3 (band 7)", 0.783, 0.028, 20),
    Band("nir08", "B8A", "nir08", "NIR 2 (band 8A)", 0.865, 0.033, 20),
    Band("swir16", "B11", "swir16", "SWIR 1 (band 11)", 1.61, 0.143, 20),
    Band("swir22", "B12", "swir22", "SWIR 2 (band 12)", 2.19, 0.242, 20),
)
SCL_KEY, SCL_PC_KEY = "scl", "SCL"

# Surface reflectance per WorldCover code, in BANDS order (B02 B03 B04 B08 B05 B06 B07 B8A B11 B12).
SPECTRA: dict[int, tuple[float, ...]] = {
    L.TREE: (0.025, 0.045, 0.025, 0.30, 0.07, 0.21, 0.27, 0.30, 0.15, 0.07),
    L.SHRUB: (0.045, 0.070, 0.065, 0.24, 0.10, 0.19, 0.23, 0.25, 0.23, 0.13),
    L.GRASS: (0.040, 0.080, 0.050, 0.36, 0.11, 0.27, 0.33, 0.37, 0.24, 0.12),
    L.CROP: (0.050, 0.090, 0.060, 0.40, 0.12, 0.30, 0.37, 0.41, 0.25, 0.13),
    L.BUILT: (0.100, 0.110, 0.120, 0.18, 0.14, 0.17, 0.18, 0.19, 0.22, 0.19),
    L.BARE: (0.140, 0.170, 0.200, 0.26, 0.22, 0.24, 0.25, 0.27, 0.33, 0.28),
    L.SNOW: (0.850, 0.830, 0.800, 0.72, 0.78, 0.75, 0.73, 0.70, 0.10, 0.06),
    L.WATER: (0.060, 0.050, 0.030, 0.02, 0.02, 0.015, 0.015, 0.012, 0.008, 0.005),
    L.WETLAND: (0.040, 0.060, 0.045, 0.20, 0.07, 0.16, 0.19, 0.21, 0.12, 0.06),
    L.MANGROVE: (0.030, 0.045, 0.025, 0.25, 0.07, 0.19, 0.24, 0.26, 0.11, 0.05),
    L.MOSS: (0.060, 0.080, 0.080, 0.22, 0.11, 0.18, 0.21, 0.23, 0.20, 0.13),
}
CLOUD = (0.55, 0.56, 0.57, 0.60, 0.58, 0.59, 0.60, 0.60, 0.45, 0.33)
VEGETATION = {L.TREE, L.SHRUB, L.GRASS, L.CROP, L.WETLAND, L.MANGROVE, L.MOSS}

# Scene classification (SCL) values used here.
SCL_NODATA, SCL_SHADOW, SCL_VEG, SCL_NOT_VEG, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS, SCL_SNOW = 8, 9, 10, 11
SCL_CLOUDY = (SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_CIRRUS)

_LUT = np.zeros((256, len(BANDS)), np.float32)
for _code, _spec in SPECTRA.items():
    _LUT[_code] = _spec
# In-memory arrays carry no georeferencing of their own (the transforms passed do), which makes
# rasterio warn on every reproject; catch_warnings() is not thread-safe, so filter by module.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.warp")

_SCL_LUT = np.full(256, SCL_NOT_VEG, np.uint8)
_SCL_LUT[0] = SCL_NODATA
_SCL_LUT[list(VEGETATION)] = SCL_VEG
_SCL_LUT[L.WATER] = SCL_WATER
_SCL_LUT[L.SNOW] = SCL_SNOW

# Target cloudiness per acquisition (cycled): a clear day, a partly cloudy one, a cloudy one.
CLOUD_TARGETS = (0.02, 0.18, 0.55, 0.08)
BOA_OFFSET_DN = 1000  # processing baseline >= 04.00 adds 1000 to every DN


@dataclass(frozen=True)
class Acquisition:
    """Atmosphere of one overpass of an area: cloud density and shadow on the area grid."""

    date: dt.date
    index: int  # position in the area's acquisition list
    cloud: F32  # 0..1 optical density
    shadow: F32  # 0..1 shadow strength
    transform: Affine  # of the cloud and shadow grids (EPSG:4326)


# Clouds are smooth at the scale of kilometres: a grid 4 times coarser than WorldCover's keeps
# their shape and saves 15/16 of the memory and time (they are resampled bilinearly anyway).
CLOUD_DECIMATION = 4


def acquisitions(area: Area, seed: int, grid: AreaGrid) -> list[Acquisition]:
    f = CLOUD_DECIMATION
    transform = grid.transform @ Affine.scale(f)
    cols, rows = np.arange(-(-grid.width // f)), np.arange(-(-grid.height // f))
    lons = np.asarray(transform.c + (cols + 0.5) * transform.a, np.float64)
    lats = np.asarray(transform.f + (rows + 0.5) * transform.e, np.float64)
    out = []
    for i, day in enumerate(area.dates()):
        cv = canvas_at(lons, lats, area_seed(seed, area) + 1000 + i)
        field = cv.fbm(2500.0, 70, octaves=5)
        t = float(np.quantile(field, 1.0 - CLOUD_TARGETS[i % len(CLOUD_TARGETS)]))
        cloud = np.clip((field - t) / 0.6 + 0.2, 0.0, 1.0) * (field > t)
        # Shadows fall away from the sun: the cloud field shifted by ~600 m south, 400 m west.
        shift = (round(600 / (9.3 * f)), round(-400 / (9.3 * f)))
        shadow = np.roll(cloud, shift, axis=(0, 1))
        out.append(
            Acquisition(day, i, cloud.astype(np.float32), shadow.astype(np.float32), transform)
        )
    return out


@dataclass(frozen=True)
class Window:
    """The part of a Sentinel-2 tile (10 m pixel indices, even-aligned) an area covers."""

    row0: int
    col0: int
    height: int
    width: int


def tile_window(tile: S2Tile, bbox: tuple[float, float, float, float]) -> Window | None:
    x0, y0, x1, y1 = transform_bounds("EPSG:4326", f"EPSG:{tile.epsg}", *bbox, densify_pts=21)
    n = tile.shape(10)[0]
    c0 = max(0, int(np.floor((x0 - tile.ulx) / 20)) * 2)
    c1 = min(n, int(np.ceil((x1 - tile.ulx) / 20)) * 2)
    r0 = max(0, int(np.floor((tile.uly - y1) / 20)) * 2)
    r1 = min(n, int(np.ceil((tile.uly - y0) / 20)) * 2)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(r0, c0, r1 - r0, c1 - c0)


def _warp(
    src: npt.NDArray[Any], src_transform: Affine, tile: S2Tile, win: Window, nearest: bool
) -> npt.NDArray[Any]:
    """Resample a lon/lat grid onto a window of a Sentinel-2 tile's 10 m grid."""
    dst = np.zeros((win.height, win.width), src.dtype)
    reproject(
        src,
        dst,
        src_transform=src_transform,
        src_crs=CRS.from_epsg(4326),
        dst_transform=tile.transform(10) @ Affine.translation(win.col0, win.row0),
        dst_crs=CRS.from_epsg(tile.epsg),
        src_nodata=None,
        dst_nodata=0,
        resampling=Resampling.nearest if nearest else Resampling.bilinear,
    )
    return dst


def render(
    codes: npt.NDArray[np.uint8],
    tex: F32,
    acq: Acquisition,
    grid: AreaGrid,
    tile: S2Tile,
    win: Window,
    noise_seed: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """Surface reflectance (bands, H, W) at 10 m and the 10 m SCL for one area in one tile."""
    lc = _warp(codes, grid.transform, tile, win, nearest=True)
    t = _warp(tex, grid.transform, tile, win, nearest=False)
    cloud = _warp(acq.cloud, acq.transform, tile, win, nearest=False)
    shadow = _warp(acq.shadow, acq.transform, tile, win, nearest=False)
    valid = lc > 0
    brightness = np.where(valid, t, np.float32(1.0))
    season = np.float32(1.0 + 0.06 * np.cos(acq.index * 1.3))  # vegetation vigour per date
    vigour = np.where(np.isin(lc, list(VEGETATION)), season, np.float32(1.0))
    shadow_strength = np.clip(shadow - cloud, 0.0, 1.0)
    shade = 1.0 - 0.65 * shadow_strength
    clear = 1.0 - cloud
    rng = np.random.default_rng([noise_seed, acq.index])
    # Band by band keeps the peak memory at one band of temporaries (large windows are GBs).
    refl = np.empty((len(BANDS), *lc.shape), np.float32)
    for b in range(len(BANDS)):
        r = _LUT[lc, b] * brightness
        if BANDS[b].key in ("nir", "rededge1", "rededge2", "rededge3", "nir08"):
            r *= vigour
        r += rng.normal(0.0, 0.004, r.shape).astype(np.float32)
        r *= shade
        r = r * clear + np.float32(CLOUD[b]) * cloud
        r[~valid] = np.nan
        refl[b] = r
    scl = _SCL_LUT[lc]
    scl[shadow_strength > 0.35] = SCL_SHADOW
    scl[(cloud > 0.12) & (cloud <= 0.25)] = SCL_CIRRUS
    scl[(cloud > 0.25) & (cloud <= 0.55)] = SCL_CLOUD_MED
    scl[cloud > 0.55] = SCL_CLOUD_HIGH
    scl[~valid] = SCL_NODATA
    return refl, scl


def to_dn(refl: npt.NDArray[np.float32], offset_dn: int) -> npt.NDArray[np.uint16]:
    """Reflectance to L2A digital numbers: DN = reflectance * 10000 + offset; nodata is 0."""
    dn = np.rint(np.nan_to_num(refl, nan=-1.0) * 10000.0) + offset_dn
    dn = np.where(np.isnan(refl), 0, np.clip(dn, 1, 65535))
    return dn.astype(np.uint16)


def to_20m(a: npt.NDArray[Any], mean: bool) -> npt.NDArray[Any]:
    """Aggregate a 10 m window (even shape) to 20 m: mean for reflectance, pick for classes."""
    if not mean:
        return a[..., ::2, ::2]
    h, w = a.shape[-2:]
    blocks = a.reshape(*a.shape[:-2], h // 2, 2, w // 2, 2)
    ok = ~np.isnan(blocks)
    total = np.where(ok, blocks, 0).sum(axis=(-3, -1))
    count = ok.sum(axis=(-3, -1))
    # Blocks without any valid pixel stay nodata (NaN); no warnings from empty means.
    return np.asarray(np.where(count > 0, total / np.maximum(count, 1), np.nan), a.dtype)
