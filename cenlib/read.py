"""Reading COG windows onto a patch's GeoBox.

odc-geo works out which source window covers the patch and whether the read is a plain paste
(same CRS, same pixel grid: the ``utm`` grid against Sentinel-2) or needs warping
(``rio_reproject``); rasterio does the I/O. Open datasets are kept in a :class:`Readers` cache for
the life of one task, so a shard's patches reuse each file handle.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import rasterio
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi
from odc.geo.roi import roi_is_empty
from odc.geo.warp import rio_reproject
from rasterio.errors import RasterioError
from rasterio.windows import Window

GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "1",
    "VSI_CACHE": "TRUE",
}


class AssetReadError(RuntimeError):
    """One asset could not be read; carries what the failures table needs."""

    def __init__(self, item_id: str, asset: str, href: str, reason: str) -> None:
        super().__init__(f"item {item_id}, asset {asset!r} ({href}): {reason}")
        self.item_id, self.asset, self.href, self.reason = item_id, asset, href, reason


@dataclass(frozen=True)
class AssetRef:
    """One asset of one item, with the href to read (already signed if the catalogue needs it)."""

    item_id: str
    asset: str
    href: str


class Readers(contextlib.AbstractContextManager["Readers"]):
    """Open rasterio datasets by href, for the duration of one task."""

    def __init__(self, log: list[tuple[str, Window]] | None = None) -> None:
        self._env = rasterio.Env(**GDAL_ENV)
        self._open: dict[str, Any] = {}
        self.log = log  # (href, source window) of every read, when given (benchmarks)

    def __enter__(self) -> Readers:
        self._env.__enter__()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for ds in self._open.values():
            ds.close()
        self._open.clear()
        self._env.__exit__(et, ev, tb)

    def dataset(self, ref: AssetRef) -> Any:
        ds = self._open.get(ref.href)
        if ds is None:
            try:
                ds = rasterio.open(ref.href)
            except RasterioError as e:
                raise AssetReadError(ref.item_id, ref.asset, ref.href, f"cannot open: {e}") from e
            if ds.crs is None:
                ds.close()
                raise AssetReadError(
                    ref.item_id, ref.asset, ref.href, "file has no CRS; cannot place it on a patch"
                )
            self._open[ref.href] = ds
        return ds


def read_onto(
    readers: Readers,
    ref: AssetRef,
    dst: GeoBox,
    resampling: str,
    nodata: float,
) -> npt.NDArray[Any] | None:
    """The asset's pixels on `dst` (nodata where it has none), or None if it misses `dst`."""
    ds = readers.dataset(ref)
    src = GeoBox(ds.shape, ds.transform, ds.crs)
    src_nodata = ds.nodata if ds.nodata is not None else nodata
    out = np.full(dst.shape.yx, nodata, dtype=ds.dtypes[0])
    try:
        roi = compute_reproject_roi(src, dst)
        if roi.paste_ok and roi.read_shrink == 1:
            # Same pixel grid up to a whole-pixel shift: no resampling at all.
            if roi_is_empty(roi.roi_dst):
                return None
            window = Window.from_slices(*roi.roi_src)
            if readers.log is not None:
                readers.log.append((ref.href, window))
            out[cast(Any, roi.roi_dst)] = ds.read(1, window=window)
            return out
        roi = compute_reproject_roi(src, dst, padding=2)
        if roi_is_empty(roi.roi_dst) or roi_is_empty(roi.roi_src):
            return None
        window = Window.from_slices(*roi.roi_src)
        if readers.log is not None:
            readers.log.append((ref.href, window))
        data = ds.read(1, window=window)
    except RasterioError as e:
        raise AssetReadError(ref.item_id, ref.asset, ref.href, f"read failed: {e}") from e
    rio_reproject(
        data, out, src[roi.roi_src], dst, resampling, src_nodata=src_nodata, dst_nodata=nodata
    )
    return out


def mosaic(
    readers: Readers,
    refs: list[AssetRef],
    dst: GeoBox,
    resampling: str,
    nodata: float,
    dtype: npt.DTypeLike,
) -> npt.NDArray[Any]:
    """First-valid mosaic of several assets on `dst` (e.g. one date from two MGRS tiles)."""
    out = np.full(dst.shape.yx, nodata, dtype=dtype)
    todo = np.ones(dst.shape.yx, dtype=bool)
    for ref in refs:
        a = read_onto(readers, ref, dst, resampling, nodata)
        if a is None:
            continue
        fill = todo & (a != nodata)
        out[fill] = a[fill]
        todo &= ~fill
        if not todo.any():
            break
    return out
