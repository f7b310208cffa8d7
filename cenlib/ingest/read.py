"""Reading COG windows onto a patch's GeoBox.

odc-geo works out which source window covers the patch and whether the read is a plain paste
(same CRS, same pixel grid: the ``utm`` grid against Sentinel-2) or needs warping
(``rio_reproject``); rasterio does the I/O. Open datasets are kept in a :class:`Readers` cache for
the life of one task, so a shard's patches reuse each file handle.

Signed hrefs expire (a Planetary Computer SAS token lasts about an hour; a run can take days).
A read refused for its signature (HTTP 403, or a failure once the href's expiry has passed) is
re-signed by the rule of the href's host (:mod:`.sign`) and tried again; the re-signed href
then serves every later read of it in the process. Signatures are stripped from every href and
message an :class:`AssetReadError` carries, and from rasterio's log records.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, wait
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import rasterio
from odc.geo.geobox import GeoBox
from odc.geo.overlap import compute_reproject_roi
from odc.geo.roi import roi_is_empty
from rasterio.errors import RasterioError
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from cenlib.ingest.sign import SigningError, expired, fix, resign, resignable, signing_rule
from cenlib.stac.signatures import is_masked, redact, strip_signature

# GDAL's own advice for COGs on object stores (gdal.org, "Virtual file systems" and "COG").
GDAL_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
    "GDAL_HTTP_MAX_RETRY": "5",  # 429, 502, 503, 504 and resets, with backoff from the delay
    "GDAL_HTTP_RETRY_DELAY": "1",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # adjacent tiles in one request
    "GDAL_HTTP_MULTIPLEX": "YES",  # one HTTP/2 connection for concurrent reads, when offered
    "GDAL_INGESTED_BYTES_AT_OPEN": "32768",  # a COG header (IFDs, tile index) in one GET
    "GDAL_HTTP_CONNECTTIMEOUT": "20",  # a stalled store fails the read (then retried)...
    "GDAL_HTTP_TIMEOUT": "60",  # ...instead of hanging the task
    "VSI_CACHE": "TRUE",
}


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = redact(message), None
        return True


@functools.cache
def _redact_rasterio_logs() -> None:
    """rasterio logs GDAL's messages and dataset names (signed hrefs) at INFO and DEBUG."""
    for name in ("_err", "_env", "_base", "_io", "env"):
        logging.getLogger(f"rasterio.{name}").addFilter(_Redact())


class AssetReadError(RuntimeError):
    """One asset could not be read; carries what the failures table needs (the href and the
    reason with any signature stripped)."""

    def __init__(self, item_id: str, asset: str, href: str, reason: str) -> None:
        href, reason = strip_signature(href), redact(reason)
        super().__init__(f"item {item_id}, asset {asset!r} ({href}): {reason}")
        self.item_id, self.asset, self.href, self.reason = item_id, asset, href, reason


_current: dict[str, str] = {}  # href as the item gave it -> its latest re-signed form
_signing = threading.Lock()  # held while an href is re-signed and _current updated


@dataclass(frozen=True)
class AssetRef:
    """One asset of one item, with the href to read (already signed if the catalogue needs it)."""

    item_id: str
    asset: str
    href: str


_T = TypeVar("_T")
_R = TypeVar("_R")

RETRIES = 4  # attempts after the first, per open or read, on top of GDAL's own HTTP retries
BACKOFF = 0.25  # seconds before the first retry; doubled each time
RESIGNS = 3  # re-signs in a row per open or read before a 403 is final


def _reason(e: BaseException) -> str:
    """GDAL's own message: rasterio's "Read failed. See previous exception" hides it in the
    exception chain."""
    parts: list[str] = []
    while e is not None and len(parts) < 4:
        text = str(e).strip()
        if text and text not in parts:
            parts.append(text)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return "; ".join(reversed(parts)) or type(e).__name__


@functools.cache
def _gdal() -> Any:
    """The GDAL library rasterio loaded (its wheel bundles one), for the one C call rasterio
    does not wrap; None when it cannot be found."""
    here = Path(rasterio.__file__).parent
    found = sorted(here.parent.glob(f"{here.name}.libs/libgdal*")) or [
        Path(p) for p in [ctypes.util.find_library("gdal")] if p
    ]
    try:
        lib = ctypes.CDLL(str(found[0])) if found else None
        if lib is not None:
            lib.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
            lib.VSICurlPartialClearCache.restype = None
        return lib
    except (OSError, AttributeError):
        return None


def forget_http(href: str) -> None:
    """Drop what GDAL's process-wide /vsicurl/ cache holds of ``href``: after a connection
    reset mid-body it may keep the short body, and every retry would read the same."""
    lib = _gdal()
    if lib is not None and href.startswith(("http://", "https://")):
        lib.VSICurlPartialClearCache(f"/vsicurl/{href}".encode())


def _permanent(e: RasterioError) -> bool:
    """An open that no retry can mend: the file is not there (a local path, or HTTP 404)."""
    text = _reason(e)
    return any(m in text for m in ("No such file", "does not exist", "response code: 404"))


def _forbidden(e: BaseException) -> bool:
    return "response code: 403" in _reason(e)


def _signed(ref: AssetRef, href: str, why: str) -> str:
    """``href`` signed afresh; a failure names the asset, the signing rule and the fix."""
    try:
        return resign(href)
    except SigningError as err:
        rule = signing_rule(href)
        raise AssetReadError(
            ref.item_id,
            ref.asset,
            ref.href,
            f"{why} by the {rule} rule failed: {err}; {fix(rule, href)}",
        ) from err


class Readers(contextlib.AbstractContextManager["Readers"]):
    """Open rasterio datasets by href, for the duration of one task.

    An open or a read that fails is retried (the dataset closed and opened again, since a
    connection reset mid-body can leave a handle's cache in a bad state) up to
    :data:`RETRIES` times with doubling backoff; :attr:`retries` counts them per href. A
    failure that outlasts them is an :class:`AssetReadError` naming the asset.

    A signed href refused for its signature (403 at open; any failure once its expiry has
    passed) is re-signed (:func:`resign`) and tried again at once, up to :data:`RESIGNS` times
    in a row; :attr:`resigns` counts them per href, apart from the retries.

    With a `pool`, :meth:`map` opens and reads different assets (a day's bands) at once in its
    threads, so their waits on the network overlap; each asset is still used by one thread at a
    time.
    """

    def __init__(
        self, log: list[tuple[str, Window]] | None = None, pool: Executor | None = None
    ) -> None:
        _redact_rasterio_logs()
        self.pool = pool
        self._env = rasterio.Env(**GDAL_ENV)
        self._open: dict[str, Any] = {}
        self._opened: dict[str, str] = {}  # href as given -> the (re-signed) href it opened
        self.log = log  # (href, source window) of every read, when given (benchmarks)
        self.stacks: list[StackRead] | None = None  # every stack read, when set (benchmarks)
        self.retries: dict[str, int] = {}
        self.resigns: dict[str, int] = {}
        self.broken: set[str] = set()
        self.sleep = time.sleep  # tests and benchmarks may shorten the backoff
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
        self._opened.clear()
        self._env.__exit__(et, ev, tb)

    def map(self, fn: Callable[[_T], _R], xs: Sequence[_T]) -> list[_R]:
        """``[fn(x) for x in xs]``, at once in the pool when there is one. Every call finishes
        before the first failure in order is raised, as the loop would raise it (no thread is
        left using a dataset that the caller may close)."""
        if self.pool is None or len(xs) < 2:
            return [fn(x) for x in xs]

        def run(x: _T) -> _R:
            with rasterio.Env(**GDAL_ENV):  # GDAL's options are per thread in a child thread
                return fn(x)

        futures = [self.pool.submit(run, x) for x in xs]
        wait(futures)
        return [f.result() for f in futures]

    def _close(self, ref: AssetRef) -> None:
        ds = self._open.pop(ref.href, None)
        if ds is not None:
            ds.close()
        forget_http(self._opened.pop(ref.href, _current.get(ref.href, ref.href)))

    def _retry(self, ref: AssetRef, attempt: int, what: str, e: RasterioError) -> None:
        """Back off before attempt ``attempt + 1``, or raise when none is left."""
        if attempt >= RETRIES or ref.href in self.broken:
            self.broken.add(ref.href)  # outlasted its retries once: the next failure is final
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise AssetReadError(
                ref.item_id, ref.asset, ref.href, f"{what}{tries}: {_reason(e)}"
            ) from e
        self.retries[ref.href] = self.retries.get(ref.href, 0) + 1
        self._close(ref)
        self.sleep(BACKOFF * 2**attempt)

    def _resign(self, ref: AssetRef, href: str, n: int, what: str, e: RasterioError) -> bool:
        """Re-sign `href` (what ``ref`` last opened) when its signature is why ``e`` happened,
        so that the caller tries again at once; False when the signature is not the cause."""
        if not resignable(href) or not (_forbidden(e) or expired(href)):
            return False
        rule = signing_rule(href)
        if n >= RESIGNS:
            raise AssetReadError(
                ref.item_id,
                ref.asset,
                ref.href,
                f"{what}: refused after {n} re-signs by the {rule} rule ({_reason(e)}); the "
                f"signature it gives does not grant access: {fix(rule, href)}",
            ) from e
        with _signing:  # one re-sign per refused href, however many threads it refused
            if _current.get(ref.href, ref.href) != href:  # another reader re-signed it already
                self._close(ref)
                return True
            fresh = _signed(
                ref, href, f"{what}: signature refused or expired ({_reason(e)}) and re-signing"
            )
            self._close(ref)
            _current[ref.href] = fresh
        self.resigns[ref.href] = self.resigns.get(ref.href, 0) + 1
        return True

    def _unmasked(self, ref: AssetRef) -> str:
        """The href to open for ``ref``: its latest re-signed form, signed now when the stored
        item had its signature masked (cenlib.stac.signatures); a masking is no refusal, so
        this is not counted as a re-sign."""
        with _signing:
            href = _current.get(ref.href, ref.href)
            if not is_masked(href):
                return href
            fresh = _signed(
                ref, href, "the stored item's signature is masked and signing it afresh"
            )
            _current[ref.href] = fresh
            return fresh

    def read(self, ref: AssetRef, window: Window) -> npt.NDArray[Any]:
        """Band 1 of the asset in ``window``, retried and re-signed as the class says."""
        attempt = resigned = 0
        while True:
            ds = self.dataset(ref)
            try:
                return cast(npt.NDArray[Any], ds.read(1, window=window))
            except RasterioError as e:
                if self._resign(ref, self._opened[ref.href], resigned, "read failed", e):
                    resigned += 1
                    continue
                self._retry(ref, attempt, "read failed", e)
                attempt += 1

    def dataset(self, ref: AssetRef) -> Any:
        ds: Any = self._open.get(ref.href)
        if ds is None:
            attempt = resigned = 0
            while True:
                href = self._unmasked(ref)
                try:
                    ds = rasterio.open(href)
                    break
                except RasterioError as e:
                    if self._resign(ref, href, resigned, "cannot open", e):
                        resigned += 1
                        continue
                    if _permanent(e):
                        raise AssetReadError(  # not transient: no retry
                            ref.item_id, ref.asset, ref.href, f"cannot open: {_reason(e)}"
                        ) from e
                    self._retry(ref, attempt, "cannot open", e)
                    attempt += 1
            if ds.crs is None:
                ds.close()
                raise AssetReadError(
                    ref.item_id, ref.asset, ref.href, "file has no CRS; cannot place it on a patch"
                )
            self._open[ref.href] = ds
            self._opened[ref.href] = href
        return ds


@dataclass(frozen=True)
class StackRead:
    """One :func:`read_stack_onto` call as it read and warped (kept when a benchmark asks)."""

    hrefs: tuple[str, ...]
    window: Window
    src: GeoBox  # the source pixels of ``window``
    src_nodata: float
    dst: GeoBox
    nodata: float
    resampling: str
    paste: tuple[slice, slice] | None  # where the window lands when no warp is needed
    digest: str  # sha256 of the pixels the call returned


def pixels(a: npt.NDArray[Any]) -> str:
    """sha256 of an array's shape, type and bytes (to compare reads without keeping them)."""
    return hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()


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
    if readers.log is not None:
        readers.log.extend((ref.href, window) for ref in refs)
    datas = readers.map(lambda ref: readers.read(ref, window), refs)
    out = np.full((len(refs), *dst.shape.yx), nodata, dtype=first.dtypes[0])
    src_nodata = first.nodata if first.nodata is not None else nodata
    part = src[roi.roi_src]
    if paste:
        # Same pixel grid up to a whole-pixel shift: no resampling at all.
        ys, xs = cast(Any, roi.roi_dst)
        out[:, ys, xs] = np.stack(datas)
    else:
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
    if readers.stacks is not None:
        at = cast(tuple[slice, slice], tuple(roi.roi_dst)) if paste else None
        hrefs = tuple(r.href for r in refs)
        readers.stacks.append(
            StackRead(hrefs, window, part, src_nodata, dst, nodata, resampling, at, pixels(out))
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
