"""Cloud-Optimized GeoTIFFs of a full tile that holds data only in a few windows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

BLOCK = 1024  # Earth Search and WorldCover COGs use 1024-pixel internal tiles too


def write_sparse_cog(
    path: Path,
    parts: Sequence[tuple[int, int, npt.NDArray[np.generic]]],
    shape: tuple[int, int],
    crs: str,
    transform: Affine,
    *,
    nodata: int = 0,
    resampling: str = "nearest",
    tags: dict[str, str] | None = None,
) -> None:
    """Write a COG of `shape` whose only data are `parts` (row0, col0, array); the rest is nodata.

    Empty blocks are never stored (SPARSE_OK), so a mostly-empty 10980 x 10980 band costs
    little disk and time, yet readers see the tile's real extent and grid.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.tif")
    dtype = parts[0][2].dtype if parts else np.dtype("uint8")
    profile = {
        "driver": "GTiff",
        "width": shape[1],
        "height": shape[0],
        "count": 1,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "sparse_ok": True,
    }
    with rasterio.open(tmp, "w", **profile) as dst:
        for row0, col0, arr in parts:
            dst.write(arr, 1, window=Window(col0, row0, arr.shape[1], arr.shape[0]))
        if tags:
            dst.update_tags(**tags)
    try:
        with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
            rasterio.shutil.copy(
                tmp,
                path,
                driver="COG",
                compress="deflate",
                predictor=2,
                blocksize=BLOCK,
                overview_resampling=resampling,
                sparse_ok=True,
            )
    finally:
        tmp.unlink(missing_ok=True)
