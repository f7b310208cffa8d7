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
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

# GDAL's own advice for COGs on object stores (gdal.org, "Virtual file systems" and "COG").
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
    "GDAL_HTTP_MAX_RETRY": "5",  # 429, 502, 503, 504 and resets, with backoff from the delay
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # adjacent tiles in one request
    "GDAL_HTTP_MULTIPLEX": "YES",  # one HTTP/2 connection for concurrent reads, when offered
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",  # a COG header (IFDs, tile index) in one GET
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
        # Read plan per (source grid, patch grid): bands and days on one grid share it.
        self.rois: dict[tuple[Any, ...], tuple[Any, bool, bool]] = {}

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


def _grid_key(g: GeoBox) -> tuple[Any, ...]:
    return (g.shape.yx, tuple(g.affine)[:6], str(g.crs))


def read_stack_onto(
    readers: Readers,
    refs: list[AssetRef],
    dst: GeoBox,
    resampling: str,
    nodata: float,
) -> npt.NDArray[Any] | None:
    """Assets on one pixel grid (e.g. an item's 10 m bands) as a ``(n, y, x)`` stack on `dst`.

    The read window is worked out once per (source grid, patch) and the stack is warped in one
    call, so GDAL sets up the coordinate transformation once for all bands. Returns None when
    the assets miss `dst`; nodata where they have no data.
    """
    first = readers.dataset(refs[0])
    src = GeoBox(first.shape, first.transform, first.crs)
    for ref in refs[1:]:
        ds = readers.dataset(ref)
        if ds.shape != first.shape or ds.transform != first.transform or ds.crs != first.crs:
            raise AssetReadError(
                ref.item_id, ref.asset, ref.href, f"not on the pixel grid of {refs[0].asset!r}"
            )
    key = (_grid_key(src), _grid_key(dst))
    plan = readers.rois.get(key)
    if plan is None:
        # A paste needs the same CRS; only then is the unpadded plan worth working out.
        roi = compute_reproject_roi(src, dst) if src.crs == dst.crs else None
        paste = roi is not None and roi.paste_ok and roi.read_shrink == 1
        if roi is None or not paste:
            roi = compute_reproject_roi(src, dst, padding=2)
        empty = roi_is_empty(roi.roi_dst) or roi_is_empty(roi.roi_src)
        plan = readers.rois[key] = (roi, paste, empty)
    roi, paste, empty = plan
    if empty:
        return None
    window = Window.from_slices(*roi.roi_src)
    datas = []
    for ref in refs:
        if readers.log is not None:
            readers.log.append((ref.href, window))
        try:
            datas.append(readers.dataset(ref).read(1, window=window))
        except RasterioError as e:
            raise AssetReadError(ref.item_id, ref.asset, ref.href, f"read failed: {e}") from e
    out = np.full((len(refs), *dst.shape.yx), nodata, dtype=first.dtypes[0])
    if paste:
        # Same pixel grid up to a whole-pixel shift: no resampling at all.
        ys, xs = cast(Any, roi.roi_dst)
        out[:, ys, xs] = np.stack(datas)
        return out
    src_nodata = first.nodata if first.nodata is not None else nodata
    part = src[roi.roi_src]
    # One GDAL warp for the whole stack (odc-geo's rio_reproject warps band by band).
    reproject(
        np.stack(datas),
        out,
        src_transform=part.affine,
        src_crs=first.crs,
        src_nodata=src_nodata,
        dst_transform=dst.affine,
        dst_crs=str(dst.crs),
        dst_nodata=nodata,
        resampling=Resampling[resampling],
    )
    return out


def read_onto(
    readers: Readers,
    ref: AssetRef,
    dst: GeoBox,
    resampling: str,
    nodata: float,
) -> npt.NDArray[Any] | None:
    """One asset's pixels on `dst` (nodata where it has none), or None if it misses `dst`."""
    out = read_stack_onto(readers, [ref], dst, resampling, nodata)
    return None if out is None else out[0]
