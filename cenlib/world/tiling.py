"""The real tilings the archives use: ESA WorldCover 3x3 degree tiles and Sentinel-2 MGRS tiles."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import mgrs
import numpy as np
from affine import Affine
from mgrs.core import MGRSError
from pyproj import Transformer

S2_TILE_PX_10M = 10980  # 109.8 km at 10 m
S2_TILE_SIZE_M = 109_800.0


def worldcover_tile_name(lon0: int, lat0: int) -> str:
    """Name of the 3x3 degree tile whose lower-left corner is (lon0, lat0), e.g. N45E009."""
    ns = "N" if lat0 >= 0 else "S"
    ew = "E" if lon0 >= 0 else "W"
    return f"{ns}{abs(lat0):02d}{ew}{abs(lon0):03d}"


def worldcover_tile_origin(name: str) -> tuple[int, int]:
    """Inverse of :func:`worldcover_tile_name`: (lon0, lat0) of the lower-left corner."""
    lat = int(name[1:3]) * (1 if name[0] == "N" else -1)
    lon = int(name[4:7]) * (1 if name[3] == "E" else -1)
    return lon, lat


def worldcover_tiles(bbox: tuple[float, float, float, float]) -> list[str]:
    """WorldCover tiles intersecting a lon/lat bbox (touching edges excluded)."""
    w, s, e, n = bbox
    # Integer arithmetic: w / 3 can underflow to -0.0 for tiny negative w and lose its tile.
    lons = range(3 * (math.floor(w) // 3), 3 * -(-math.ceil(e) // 3), 3)
    lats = range(3 * (math.floor(s) // 3), 3 * -(-math.ceil(n) // 3), 3)
    return [worldcover_tile_name(lo, la) for la in lats for lo in lons]


@dataclass(frozen=True)
class S2Tile:
    """A Sentinel-2 MGRS tile: 109.8 km square whose corner sits 40 m outside its 100 km square."""

    id: str  # e.g. "33TWM"
    epsg: int
    ulx: float
    uly: float

    @property
    def zone(self) -> int:
        return int(self.id[:2])

    @property
    def latitude_band(self) -> str:
        return self.id[2]

    @property
    def grid_square(self) -> str:
        return self.id[3:]

    def transform(self, res: float) -> Affine:
        return Affine(res, 0.0, self.ulx, 0.0, -res, self.uly)

    def shape(self, res: float) -> tuple[int, int]:
        n = round(S2_TILE_SIZE_M / res)
        return n, n

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.ulx, self.uly - S2_TILE_SIZE_M, self.ulx + S2_TILE_SIZE_M, self.uly)


@lru_cache(maxsize=64)
def _to_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(4326, epsg, always_xy=True)


@lru_cache(maxsize=64)
def _from_utm(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)


def utm_epsg(lon: float, lat: float) -> int:
    zone = int((lon + 180) // 6) + 1
    return (32600 if lat >= 0 else 32700) + min(zone, 60)


@lru_cache(maxsize=4096)
def s2_tile(tile_id: str) -> S2Tile:
    """Geometry of an MGRS tile from its id."""
    lat, lon = mgrs.MGRS().toLatLon(tile_id)  # centre of the 100 km square
    zone = int(tile_id[:2])
    epsg = (32600 if tile_id[2] >= "N" else 32700) + zone
    e, n = _to_utm(epsg).transform(lon, lat)
    emin = math.floor(e / 100_000) * 100_000
    nmin = math.floor(n / 100_000) * 100_000
    return S2Tile(tile_id, epsg, emin - 40.0, nmin + 100_000 + 40.0)


def s2_tiles_covering(
    bbox: tuple[float, float, float, float], step_deg: float = 0.01
) -> list[S2Tile]:
    """Sentinel-2 tiles of the point's own UTM zone whose extent intersects a lon/lat bbox.

    A point is covered by its own 100 km square's tile and, because tiles overhang their square
    by 9.8 km to the east and south, possibly by its western and northern neighbours' tiles.
    """
    m = mgrs.MGRS()
    w, s, e, n = bbox
    found: dict[str, S2Tile] = {}
    for lat in np.linspace(s, n, max(2, int((n - s) / step_deg) + 1)):
        for lon in np.linspace(w, e, max(2, int((e - w) / step_deg) + 1)):
            epsg = utm_epsg(float(lon), float(lat))
            x, y = _to_utm(epsg).transform(lon, lat)
            for dx, dy in ((0, 0), (-9_800, 0), (0, 9_800), (-9_800, 9_800)):
                lo, la = _from_utm(epsg).transform(x + dx, y + dy)
                tid = m.toMGRS(la, lo, MGRSPrecision=0)
                if int(tid[:2]) != epsg % 100:
                    continue
                try:
                    tile = s2_tile(tid)
                except MGRSError:
                    # A probe a hair across the equator names the other hemisphere's square,
                    # which mgrs cannot place; the point's own square is probed as well.
                    continue
                x0, y0, x1, y1 = tile.bounds
                if x0 <= x <= x1 and y0 <= y <= y1:
                    found[tid] = tile
    return [found[k] for k in sorted(found)]
