"""A patch's GeoTIFF pair: reflectance and land cover as Cloud-Optimized GeoTIFFs, as bytes.

``geotiff/<patch>.tif`` holds the reflectance bands exactly as the store has them (int16 =
reflectance x 10000, nodata -32768) with band descriptions (the band names) and scale 1e-4 /
offset 0, so GIS tools and rasterio's ``masked``/``scales`` read reflectance without being told.
``geotiff/<patch>_label.tif`` holds the ChatEarthNet class index (uint8, nodata 0 = background)
with ChatEarthNet's palette as a GDAL colour map and the class names as ``class_<i>`` tags.

Both are written through rioxarray (the grid, CRS and nodata go in as DataArray metadata) and
returned as bytes, so the caller can put them on any fsspec filesystem. Same inputs, same bytes:
GDAL stamps no time into them. One block per 256 px patch keeps windowed (TorchGeo-style) reads
to one request; larger patches get internal tiles and overviews from the COG driver.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from rasterio.shutil import copy as copy_raster

from cenlib.classes import CLASSES, palette_rgb
from cenlib.errors import CenError

REFLECTANCE_NODATA = -32768
REFLECTANCE_SCALE = 1e-4  # store value x scale = surface reflectance
LABEL_NODATA = 0  # background: WorldCover had no value there
COG = {"driver": "COG", "compress": "DEFLATE", "predictor": 2, "blocksize": 256}


class GeoTiffError(CenError, ValueError):
    """Arrays that cannot be written as the patch's GeoTIFF (wrong shape, type or bands)."""


def geotiff_bytes(
    refl: npt.NDArray[np.int16], bands: Sequence[str], crs: str, transform: Sequence[float]
) -> bytes:
    """The reflectance COG of one patch: (band, y, x) int16, one described band per name."""
    if refl.ndim != 3 or refl.shape[0] != len(bands):
        raise GeoTiffError(
            f"reflectance of shape {refl.shape} does not match {len(bands)} bands {list(bands)}; "
            "pass (band, y, x) with one band per name"
        )
    if refl.dtype != np.int16:
        raise GeoTiffError(f"reflectance is {refl.dtype}; the store's int16 is expected")
    da = xr.DataArray(refl, dims=("band", "y", "x"), coords={"band": np.arange(1, len(bands) + 1)})
    da.attrs.update(long_name=tuple(bands), scale_factor=REFLECTANCE_SCALE, add_offset=0.0)
    da = _georeference(da, crs, transform, REFLECTANCE_NODATA)
    with tempfile.TemporaryDirectory(prefix="cen-geotiff-") as tmp:
        out = Path(tmp) / "refl.tif"
        da.rio.to_raster(out, **COG, tags={"reflectance": "value x 0.0001, nodata -32768"})
        return out.read_bytes()


def label_tiff_bytes(
    land_cover: npt.NDArray[np.uint8], crs: str, transform: Sequence[float]
) -> bytes:
    """The land-cover COG of one patch: (y, x) class indices in ChatEarthNet's palette."""
    if land_cover.ndim != 2 or land_cover.dtype != np.uint8:
        raise GeoTiffError(
            f"land cover of shape {land_cover.shape} and type {land_cover.dtype}; "
            "pass (y, x) uint8 class indices"
        )
    if int(land_cover.max(initial=0)) >= len(CLASSES):
        raise GeoTiffError(f"land cover holds class {land_cover.max()}; classes are 0..11")
    da = xr.DataArray(land_cover, dims=("y", "x"))
    da.attrs["long_name"] = "land cover (ChatEarthNet class index)"
    da = _georeference(da, crs, transform, LABEL_NODATA)
    tags = {f"class_{c.index}": c.name for c in CLASSES}
    with tempfile.TemporaryDirectory(prefix="cen-geotiff-") as tmp:
        # The COG driver only copies a finished dataset, so the colour map goes onto a plain
        # tiled GTiff first, which is then copied whole into the COG layout.
        plain, out = Path(tmp) / "plain.tif", Path(tmp) / "label.tif"
        da.rio.to_raster(plain, driver="GTiff", tiled=True, tags=tags)
        with rasterio.open(plain, "r+") as dst:
            dst.write_colormap(1, _colormap())
        copy_raster(plain, out, **COG, resampling="NEAREST")
        return out.read_bytes()


def _georeference(da: xr.DataArray, crs: str, transform: Sequence[float], nodata: int) -> Any:
    if len(transform) < 6:
        raise GeoTiffError(f"transform {list(transform)} needs the six affine terms a..f")
    da = da.rio.write_crs(crs)
    da = da.rio.write_transform(Affine(*(float(v) for v in transform[:6])))
    return da.rio.write_nodata(nodata, encoded=False)


def _colormap() -> dict[int, tuple[int, int, int, int]]:
    # Background is transparent: it is the nodata value, not a class anyone mapped.
    rgb = palette_rgb()
    return {
        i: (int(r), int(g), int(b), 0 if i == LABEL_NODATA else 255)
        for i, (r, g, b) in enumerate(rgb)
    }
