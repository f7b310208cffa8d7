"""Patch keys and their GeoBoxes on the two grids.

``chatearthnet``: Web-Mercator (EPSG:3857) XYZ tiles at zoom 13, each 512 x 512 px (about
9.55 m at the equator) and split into four 256 x 256 patches named ``{col}_{row}_patch{r}{c}``,
the tiling ChatEarthNet took over from SatlasPretrain, so our ids join with its release.

``utm``: 256 x 256 patches of native 10 m pixels in one UTM zone, aligned to the zone's 10 m grid
(the grid of every Sentinel-2 tile in that zone, so no resampling of Sentinel-2). Rows count
northwards: patch ``(col, row)`` covers x in [col*S, (col+1)*S), y in [row*S, (row+1)*S) with
S = 2560 m. Ids read ``utm{epsg}_{col}_{row}``.

All projection work goes through odc-geo; only the tile arithmetic (an affine grid) is ours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import shapely
from affine import Affine
from odc.geo import geom
from odc.geo.crs import CRS
from odc.geo.geobox import GeoBox

from cenlib.errors import CenError

if TYPE_CHECKING:
    from cenlib.config import GridConfig

GridKind = Literal["chatearthnet", "utm"]
# Half the equatorial circumference of the WGS 84 sphere used by Web Mercator.
MERCATOR_HALF = math.pi * 6378137.0
UTM_RES = 10.0
_CEN_ID = re.compile(r"^(\d+)_(\d+)_patch([01])([01])$")
_UTM_ID = re.compile(r"^utm(32[67]\d\d)_(-?\d+)_(-?\d+)$")


class GridError(CenError, ValueError):
    """A patch id or grid parameter that does not name a patch."""


@dataclass(frozen=True, order=True)
class PatchKey:
    """One patch: small, hashable, picklable; the same key names its Zarr row, request and logs.

    ``zone`` is the zoom level for ``chatearthnet`` and the EPSG code for ``utm``. ``sub`` is
    ``2 * r + c`` for the four patches of a ChatEarthNet tile and 0 for ``utm``.
    """

    grid: GridKind
    zone: int
    col: int
    row: int
    sub: int = 0
    size: int = 256

    @property
    def id(self) -> str:
        if self.grid == "chatearthnet":
            return f"{self.col}_{self.row}_patch{self.sub // 2}{self.sub % 2}"
        return f"utm{self.zone}_{self.col}_{self.row}"

    @property
    def tile(self) -> str:
        """The ChatEarthNet tile (``{col}_{row}``) or, on ``utm``, the zone."""
        return f"{self.col}_{self.row}" if self.grid == "chatearthnet" else f"EPSG:{self.zone}"

    def __repr__(self) -> str:
        return f"PatchKey({self.id!r}, {self.grid}, zone={self.zone})"

    @property
    def crs(self) -> CRS:
        return CRS("EPSG:3857") if self.grid == "chatearthnet" else CRS(f"EPSG:{self.zone}")

    @property
    def geobox(self) -> GeoBox:
        n = self.size
        if self.grid == "chatearthnet":
            tile = 2 * MERCATOR_HALF / 2**self.zone
            res = tile / (2 * n)
            r, c = divmod(self.sub, 2)
            left = -MERCATOR_HALF + self.col * tile + c * n * res
            top = MERCATOR_HALF - self.row * tile - r * n * res
            return GeoBox((n, n), Affine(res, 0, left, 0, -res, top), self.crs)
        side = n * UTM_RES
        top = (self.row + 1) * side
        return GeoBox((n, n), Affine(UTM_RES, 0, self.col * side, 0, -UTM_RES, top), self.crs)

    def lonlat_polygon(self) -> geom.Geometry:
        """The patch outline in EPSG:4326 (densified, so curved edges stay close).

        A patch across the antimeridian keeps its longitudes on one side: values west of it
        are shifted by +360, so the outline covers the patch and not the rest of the globe.
        """
        poly = self.geobox.footprint("epsg:4326", npoints=16)
        bb = poly.boundingbox
        if bb.right - bb.left <= 180:
            return poly
        shifted = shapely.transform(poly.geom, lambda xy: xy + [[360.0, 0.0]] * (xy[:, :1] < 0))
        return geom.Geometry(shifted, "epsg:4326")

    def center_lonlat(self) -> tuple[float, float]:
        c = self.geobox.extent.centroid.to_crs("epsg:4326")
        x, y = c.coords[0]
        return float(x), float(y)


@dataclass(frozen=True)
class Grid:
    """A grid kind with its parameters; makes keys from ids, points and areas."""

    kind: GridKind = "chatearthnet"
    zoom: int = 13
    size: int = 256
    utm_epsg: int | None = None  # fixed zone; None picks each point's own zone

    def __post_init__(self) -> None:
        if self.kind == "utm" and self.utm_epsg is not None and not _is_utm(self.utm_epsg):
            raise GridError(f"utm_epsg {self.utm_epsg} is not a WGS 84 / UTM zone")

    def key(self, patch_id: str) -> PatchKey:
        """Parse a patch id of this grid."""
        if self.kind == "chatearthnet":
            m = _CEN_ID.match(patch_id)
            if not m:
                raise GridError(
                    f"patch id {patch_id!r} is not a ChatEarthNet id "
                    "'{col}_{row}_patch{r}{c}'"
                )
            col, row, r, c = (int(g) for g in m.groups())
            n = 2**self.zoom
            if not (col < n and row < n):
                raise GridError(
                    f"patch id {patch_id!r}: tile outside zoom {self.zoom} (0..{n - 1})"
                )
            return PatchKey("chatearthnet", self.zoom, col, row, 2 * r + c, self.size)
        m = _UTM_ID.match(patch_id)
        if not m:
            raise GridError(f"patch id {patch_id!r} is not a UTM id 'utm{{epsg}}_{{col}}_{{row}}'")
        epsg, col, row = (int(g) for g in m.groups())
        if not _is_utm(epsg):
            raise GridError(f"patch id {patch_id!r}: EPSG:{epsg} is not a WGS 84 / UTM zone")
        return PatchKey("utm", epsg, col, row, 0, self.size)

    def zone_for(self, lon: float, lat: float) -> int:
        if self.utm_epsg:
            return self.utm_epsg
        if not (-80 <= lat <= 84 and -180 <= lon <= 180):
            raise GridError(
                f"({lon}, {lat}) is outside the UTM zones (80 S to 84 N); "
                "use grid kind 'chatearthnet' there"
            )
        return int(CRS.utm(lon, lat).epsg or 0)

    def at(self, lon: float, lat: float) -> PatchKey:
        """The patch holding a lon/lat point."""
        if self.kind == "chatearthnet":
            x, y = _to(lon, lat, CRS("EPSG:3857"))
            tile = 2 * MERCATOR_HALF / 2**self.zoom
            # Clamped inside the world first: lon 180 (or the Mercator latitude limit) lies on
            # the outer edge and belongs to the last patch, not to the one past it.
            end = 2**self.zoom - 1e-9
            fx = min(max((x + MERCATOR_HALF) / tile, 0.0), end)
            fy = min(max((MERCATOR_HALF - y) / tile, 0.0), end)
            col, row = math.floor(fx), math.floor(fy)
            c, r = int((fx - col) >= 0.5), int((fy - row) >= 0.5)
            return PatchKey("chatearthnet", self.zoom, col, row, 2 * r + c, self.size)
        epsg = self.zone_for(lon, lat)
        x, y = _to(lon, lat, CRS(f"EPSG:{epsg}"))
        side = self.size * UTM_RES
        return PatchKey("utm", epsg, math.floor(x / side), math.floor(y / side), 0, self.size)

    def covering(self, bbox: tuple[float, float, float, float]) -> Iterator[PatchKey]:
        """Every patch whose area intersects a lon/lat bbox, in row-major order.

        On ``utm`` without a fixed zone, the zone of the bbox centre is used.
        """
        w, s, e, n = bbox
        if self.kind == "chatearthnet":
            a, b = self.at(w, n), self.at(e, s)
            x0, y0 = 2 * a.col + a.sub % 2, 2 * a.row + a.sub // 2
            x1, y1 = 2 * b.col + b.sub % 2, 2 * b.row + b.sub // 2
            for py in range(y0, y1 + 1):
                for px in range(x0, x1 + 1):
                    sub = 2 * (py % 2) + px % 2
                    yield PatchKey("chatearthnet", self.zoom, px // 2, py // 2, sub, self.size)
            return
        epsg = self.zone_for((w + e) / 2, (s + n) / 2)
        box = geom.box(w, s, e, n, "epsg:4326").to_crs(f"epsg:{epsg}")
        bb = box.boundingbox
        side = self.size * UTM_RES
        rows = range(math.floor(bb.top / side), math.floor(bb.bottom / side) - 1, -1)
        for row in rows:
            for col in range(math.floor(bb.left / side), math.floor(bb.right / side) + 1):
                key = PatchKey("utm", epsg, col, row, 0, self.size)
                if key.geobox.extent.intersects(box):
                    yield key


def _is_utm(epsg: int) -> bool:
    return 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760


def _to(lon: float, lat: float, crs: CRS) -> tuple[float, float]:
    x, y = geom.point(lon, lat, "epsg:4326").to_crs(crs).coords[0]
    return float(x), float(y)


def grid_for(cfg: GridConfig) -> Grid:
    """The :class:`Grid` a grid configuration describes."""
    return Grid(cfg.kind, cfg.zoom, cfg.patch_size, cfg.utm_epsg)


def patch_xy(key: PatchKey) -> tuple[int, int]:
    """Integer patch position in its grid and zone: ChatEarthNet patches count in half tiles
    (x east, y south); UTM patches are (col, row), rows counting northwards."""
    if key.grid == "chatearthnet":
        return 2 * key.col + key.sub % 2, 2 * key.row + key.sub // 2
    return key.col, key.row


# Z-order bit spreading: (shift, mask keeping alternate runs of `shift` bits) pairs.
_MORTON = tuple((s, sum(1 << i for i in range(64) if not (i // s) % 2)) for s in (16, 8, 4, 2, 1))


def _spread(v: int) -> int:
    """Interleave zeros between the 32 low bits of v."""
    v &= 0xFFFFFFFF
    for shift, mask in _MORTON:
        v = (v | v << shift) & mask
    return v


def spatial_order(key: PatchKey) -> tuple[str, int, int]:
    """Sort key: grid, zone, then the Z-order (Morton) index of the patch.

    Z-order keeps any run of consecutive patches in a compact block (row-major order would make
    strips), so shards of a plan read few COG tiles and search few scenes.
    """
    x, y = patch_xy(key)
    if key.grid == "utm":
        y = -y  # Z-order runs north to south on both grids
    return key.grid, key.zone, _spread(x + 2**31) | _spread(y + 2**31) << 1
