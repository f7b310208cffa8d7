"""Land cover of a synthetic area, painted on the ESA WorldCover pixel grid.

Each biome paints layers in order (terrain, water, vegetation, fields, settlements, roads), so the
map has coherent regions rather than noise: forests on slopes, fields in parcels on valley floors,
towns with street grids, rivers with wetland along their banks, snow on peaks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from affine import Affine
from scipy import ndimage

from cenlib.world.noise import F32, Canvas
from cenlib.world.presets import Area
from cenlib.world.tiling import worldcover_tile_origin

WC_RES = 1.0 / 12000.0  # WorldCover pixel size in degrees
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON_EQ = 111_320.0

TREE, SHRUB, GRASS, CROP, BUILT, BARE, SNOW, WATER, WETLAND, MANGROVE, MOSS = (
    10,
    20,
    30,
    40,
    50,
    60,
    70,
    80,
    90,
    95,
    100,
)

U8 = npt.NDArray[np.uint8]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class AreaGrid:
    """An area's window of the global WorldCover grid (columns from -180 deg, rows from 90 deg)."""

    col0: int
    row0: int
    width: int
    height: int

    @classmethod
    def for_bbox(cls, bbox: tuple[float, float, float, float]) -> AreaGrid:
        w, s, e, n = bbox
        col0 = int(np.floor((w + 180.0) * 12000 + 1e-6))
        col1 = int(np.ceil((e + 180.0) * 12000 - 1e-6))
        row0 = int(np.floor((90.0 - n) * 12000 + 1e-6))
        row1 = int(np.ceil((90.0 - s) * 12000 - 1e-6))
        return cls(col0, row0, col1 - col0, row1 - row0)

    @classmethod
    def for_worldcover_tile(cls, name: str) -> AreaGrid:
        """The whole 36000 x 36000 pixel grid of a WorldCover tile such as N45E009."""
        lon0, lat0 = worldcover_tile_origin(name)
        return cls(round((lon0 + 180) * 12000), round((90 - lat0 - 3) * 12000), 36000, 36000)

    def intersection(self, other: AreaGrid) -> AreaGrid | None:
        """The pixels both grids cover, or None."""
        c0, c1 = max(self.col0, other.col0), min(self.col0 + self.width, other.col0 + other.width)
        r0, r1 = max(self.row0, other.row0), min(self.row0 + self.height, other.row0 + other.height)
        return AreaGrid(c0, r0, c1 - c0, r1 - r0) if c1 > c0 and r1 > r0 else None

    def slices(self, part: AreaGrid) -> tuple[slice, slice]:
        """Row and column slices of `part` within this grid's arrays."""
        r, c = part.row0 - self.row0, part.col0 - self.col0
        return slice(r, r + part.height), slice(c, c + part.width)

    @property
    def transform(self) -> Affine:
        return Affine(
            WC_RES, 0.0, -180.0 + self.col0 * WC_RES, 0.0, -WC_RES, 90.0 - self.row0 * WC_RES
        )

    def lonlat_centres(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        lons = -180.0 + (self.col0 + np.arange(self.width) + 0.5) * WC_RES
        lats = 90.0 - (self.row0 + np.arange(self.height) + 0.5) * WC_RES
        return np.asarray(lons, np.float64), np.asarray(lats, np.float64)


def area_seed(seed: int, area: Area) -> int:
    """A stable per-area seed (Python's hash() is salted per process, crc32 is not)."""
    return zlib.crc32(f"{seed}:{area.name}".encode())


def canvas_for(grid: AreaGrid, seed: int) -> Canvas:
    return canvas_at(*grid.lonlat_centres(), seed)


def canvas_at(lons: npt.NDArray[np.float64], lats: npt.NDArray[np.float64], seed: int) -> Canvas:
    """A canvas over pixel centres given in degrees (any regular lon/lat grid)."""
    lon_mid, lat_mid = float(lons.mean()), float(lats.mean())
    xs = (lons - lon_mid) * M_PER_DEG_LON_EQ * np.cos(np.radians(lat_mid))
    ys = (lats - lat_mid) * M_PER_DEG_LAT
    return Canvas(xs, ys, seed)


# --- shapes -------------------------------------------------------------------------------------


def _rotated(cv: Canvas, angle_deg: float) -> tuple[F32, F32]:
    x, y = cv.grid()
    a = np.radians(angle_deg)
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    return u.astype(np.float32), v.astype(np.float32)


def river_distance(cv: Canvas, angle: float, offset_m: float, salt: int) -> F32:
    """Distance (m) to a meandering river centre line crossing the canvas."""
    u, v = _rotated(cv, angle)
    rng = cv.rng(salt)
    centre = np.full_like(u, offset_m)
    for wavelength, amp in ((3500.0, 350.0), (1300.0, 120.0), (600.0, 40.0)):
        centre += (
            amp * rng.uniform(0.6, 1.2) * np.sin(2 * np.pi * u / wavelength + rng.uniform(0, 6.3))
        )
    return np.asarray(np.abs(v - centre), np.float32)


def parcels(cv: Canvas, angle: float, size_m: tuple[float, float], salt: int) -> F32:
    """A uniform [0, 1) value per field parcel: rotated strips cut into plots of varying length."""
    u, v = _rotated(cv, angle)
    strip = np.floor(v / size_m[1]).astype(np.int64)
    # Each strip has its own plot length and phase, so plots do not line up like a checkerboard.
    key = (strip * 2654435761 + cv.seed) % 1000
    length = size_m[0] * (0.6 + 0.8 * key / 1000.0)
    plot = np.floor(u / length + key / 37.0).astype(np.int64)
    h = (plot * 73856093) ^ (strip * 19349663) ^ (cv.seed + salt)
    return np.asarray((h % 10007) / 10007.0, np.float32)


def streets(cv: Canvas, angle: float, spacing_m: float, width_m: float) -> B:
    u, v = _rotated(cv, angle)
    return ((np.abs(u) % spacing_m) < width_m) | ((np.abs(v) % spacing_m) < width_m)


def towns(cv: Canvas, candidates: B, n: int, radius_m: tuple[float, float], salt: int) -> B:
    """Settlements: noisy discs centred on randomly chosen pixels where `candidates` is true."""
    x, y = cv.grid()
    rng = cv.rng(salt)
    edge = cv.fbm(400.0, salt + 1, octaves=3)
    out = np.zeros(cv.shape, bool)
    idx = np.flatnonzero(candidates)
    if idx.size == 0:
        return out
    for k in rng.choice(idx, size=min(n, idx.size), replace=False):
        r = rng.uniform(*radius_m)
        cy, cx = np.unravel_index(k, cv.shape)
        d = np.hypot(x - x[cy, cx], y - y[cy, cx])
        out |= d < r * (1 + 0.25 * edge)
    return out


def near(mask: B, cv: Canvas, metres: float) -> B:
    """Pixels within `metres` of `mask` (anisotropic pixel sizes handled by sampling)."""
    if not mask.any():
        return np.zeros_like(mask)
    dy = abs(float(cv.ys[0] - cv.ys[1])) if len(cv.ys) > 1 else 1.0
    dx = abs(float(cv.xs[1] - cv.xs[0])) if len(cv.xs) > 1 else 1.0
    dist = ndimage.distance_transform_edt(~mask, sampling=(dy, dx))
    return np.asarray(dist < metres)


def _speckle(cv: Canvas, scale_m: float, frac: float, salt: int) -> B:
    f = cv.fbm(scale_m, salt, octaves=2)
    return np.asarray(f > np.quantile(f, 1 - frac))


# --- biomes -------------------------------------------------------------------------------------


def _alpine(cv: Canvas, temperate: bool = False) -> U8:
    rng = cv.rng(1)
    angle = rng.uniform(-40, 40)
    river = river_distance(cv, angle, rng.uniform(-800, 800), 2)
    relief = 0.25 if temperate else 1.0
    elev = relief * np.clip(river / 2500.0, 0, 3) + 0.35 * cv.fbm(2500.0, 3)
    lc = np.full(cv.shape, GRASS, np.uint8)
    floor = elev < (0.45 if not temperate else 0.7)
    # Fields on the valley floor, forests on slopes, meadows, scrub, rock and snow above.
    p = parcels(cv, angle + rng.uniform(-10, 10), (320.0, 140.0), 4)
    lc[floor] = np.where(p < 0.68, CROP, np.where(p < 0.9, GRASS, np.where(p < 0.96, TREE, BARE)))[
        floor
    ]
    forest = ~floor & (elev < 1.6) & (cv.fbm(900.0, 5) > -0.7)
    lc[forest] = TREE
    lc[~floor & (elev >= 1.25) & (elev < 1.75) & ~forest] = SHRUB
    lc[(elev >= 1.75) & (elev < 2.2)] = GRASS
    lc[(elev >= 2.0) & (cv.fbm(500.0, 6) > 0.3)] = BARE
    lc[elev >= 2.2] = BARE
    lc[elev >= 2.55] = SNOW
    lake = floor & (cv.fbm(1500.0, 7, octaves=3) > 1.9)
    water = (river < 22 + 6 * cv.value_noise(300.0, 8)) | lake
    lc[near(water, cv, 70.0) & (cv.fbm(200.0, 9, octaves=2) > 0.2) & floor] = WETLAND
    town = towns(cv, floor & ~water & (river > 150), 2 if temperate else 1, (450.0, 900.0), 10)
    lc[town] = BUILT
    lc[town & _speckle(cv, 60.0, 0.18, 11)] = GRASS  # gardens and parks
    lc[town & streets(cv, angle + 8, 110.0, 10.0)] = BUILT
    road = np.abs(river_distance(cv, angle, rng.uniform(-300, 300), 12) - 250.0) < 7.0
    lc[road & floor] = BUILT
    lc[water] = WATER
    return lc


def _tropical_coast(cv: Canvas) -> U8:
    rng = cv.rng(21)
    angle = rng.uniform(0, 360)
    u, _ = _rotated(cv, angle)
    coast = u + 600.0 * cv.fbm(3000.0, 22, octaves=3)  # ocean where coast < threshold
    ocean = coast < float(np.quantile(coast, 0.22))
    inland = ~near(ocean, cv, 2500.0)
    estuary = river_distance(cv, angle + 90 + rng.uniform(-20, 20), 0.0, 23)
    creeks = (river_distance(cv, angle + 60, 400.0, 24) < 9) | (
        river_distance(cv, angle + 120, -500.0, 25) < 8
    )
    lc = np.full(cv.shape, TREE, np.uint8)
    p = parcels(cv, rng.uniform(0, 90), (260.0, 180.0), 26)
    lc[inland & (p < 0.45)] = CROP
    lc[inland & (p >= 0.45) & (p < 0.6)] = GRASS
    lc[inland & (p >= 0.6) & (p < 0.66)] = SHRUB
    coastal_band = near(ocean, cv, 1400.0 + 500.0 * float(rng.uniform())) & ~ocean
    lc[coastal_band & (cv.fbm(700.0, 27) > -0.3)] = MANGROVE
    lc[coastal_band & near(estuary < 60, cv, 900.0)] = MANGROVE
    lc[~coastal_band & near(ocean | (estuary < 60), cv, 2500.0) & (cv.fbm(600.0, 28) > 0.6)] = (
        WETLAND
    )
    beach = near(ocean, cv, 45.0) & ~ocean & (cv.fbm(900.0, 29, octaves=2) > 0.0)
    lc[beach] = BARE
    town = towns(
        cv, near(ocean, cv, 1800.0) & ~ocean & ~near(ocean, cv, 200.0), 1, (600.0, 1000.0), 30
    )
    lc[town] = BUILT
    lc[town & _speckle(cv, 50.0, 0.2, 31)] = TREE
    lc[(creeks & coastal_band) | (estuary < 35 + 25 * np.clip(-u / 3000.0, 0, 3))] = WATER
    lc[ocean] = WATER
    return lc


def _arctic(cv: Canvas) -> U8:
    rng = cv.rng(41)
    elev = cv.fbm(3000.0, 42)
    lc = np.full(cv.shape, MOSS, np.uint8)
    low = elev < -0.3
    lc[low & (cv.fbm(400.0, 43, octaves=3) > -0.2)] = SHRUB
    lc[low & (elev < -1.0) & (cv.fbm(600.0, 44) > 0.8)] = TREE  # sheltered birch woodland
    lc[(elev < 0.3) & (cv.fbm(500.0, 45, octaves=3) > 0.9)] = GRASS
    lc[elev > 1.1] = BARE
    lc[(elev > 1.8) & (cv.fbm(300.0, 46, octaves=2) > 0.0)] = SNOW
    lakes = (cv.fbm(900.0, 47, octaves=3) > 1.5) & (elev < 0.8)
    river = river_distance(cv, rng.uniform(0, 180), rng.uniform(-1500, 1500), 48) < 25
    water = lakes | river
    lc[near(water, cv, 120.0) & ~water & (elev < 0.2) & (cv.fbm(250.0, 49) > -0.2)] = WETLAND
    lc[low & (cv.fbm(1200.0, 50) > 1.2)] = WETLAND  # bogs on flats
    town = towns(cv, near(river, cv, 600.0) & ~water & (elev < 0.0), 1, (300.0, 500.0), 51)
    lc[town] = BUILT
    lc[town & _speckle(cv, 50.0, 0.3, 52)] = GRASS
    lc[water] = WATER
    return lc


def paint(area: Area, seed: int) -> tuple[U8, AreaGrid]:
    """WorldCover codes of `area` on its window of the global WorldCover grid."""
    grid = AreaGrid.for_bbox(area.bbox)
    cv = canvas_for(grid, area_seed(seed, area))
    if area.biome == "alpine":
        lc = _alpine(cv)
    elif area.biome == "temperate":
        lc = _alpine(cv, temperate=True)
    elif area.biome == "tropical_coast":
        lc = _tropical_coast(cv)
    else:
        lc = _arctic(cv)
    return lc, grid


def texture(area: Area, seed: int, grid: AreaGrid) -> F32:
    """Within-class brightness variation (multiplicative, around 1) on the area grid."""
    cv = canvas_for(grid, area_seed(seed, area) + 7)
    return np.asarray(
        1.0 + 0.06 * cv.fbm(150.0, 60, octaves=3) + 0.03 * cv.fbm(40.0, 61, octaves=1), np.float32
    )
