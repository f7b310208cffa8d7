"""Readers of the ingest store: the whole run as a lazy Dataset, one patch as a georeferenced array.

``open_store`` is ``xarray.open_zarr`` with two changes. Zarr v3 strings come back as numpy 2
``StringDType``, which ``astype(str)`` and many libraries refuse; they are handed out as object
arrays of Python ``str``. Not ``<U`` arrays: their items are ``numpy.str_``, which pyproj (so
odc-geo's ``GeoBox`` and rioxarray too) takes for an EPSG *code*, as it does any 0-d array, and
turns ``"EPSG:3857"`` into ``"EPSG:EPSG:3857"``; the store itself holds ``"EPSG:3857"``. And
``patch_id`` is indexed (its values are read at open; every other array stays lazy).
"""

from __future__ import annotations

import difflib
import os
from typing import Any

import numpy as np
import xarray as xr
import zarr
from affine import Affine
from rioxarray.raster_array import RasterArray

from cenlib.ingest.store import StoreError, open_group

GRIDDED = ("reflectance", "land_cover", "scl")


class UnknownPatchError(StoreError, KeyError):
    """No patch of that id in the store (a ``KeyError`` too, as a missing key should be)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


def open_store(url_or_path: str | os.PathLike[str], *, mask_and_scale: bool = True) -> xr.Dataset:
    """The ingest store as a lazy, Dask-backed Dataset with the per-patch records as coordinates.

    Dims are the store's own: ``patch``, ``band``, ``y``, ``x`` (and ``affine``, ``shard``). By
    default ``reflectance`` is decoded to float reflectance with NaN for no data; with
    ``mask_and_scale=False`` it is the stored int16 (reflectance x 10000, -32768 = no data).
    String arrays (``patch_id``, ``status``, ``crs``, ``band``, ...) hold Python ``str``;
    ``patch_id`` is indexed, so ``ds.sel(patch_id=...)`` works.
    """
    url = os.fspath(url_or_path)
    try:
        g = open_group(url, "r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(
            f"no Zarr store at {url}; run `cen ingest` first or check ingest.store"
        ) from e
    if "store_version" not in g.attrs:
        raise StoreError(f"Zarr store {url} was not written by cen ingest (no store_version)")
    ds: xr.Dataset = xr.open_zarr(g.store, consolidated=False, mask_and_scale=mask_and_scale)
    strings = {
        name: var.copy(data=var.data.astype(object))  # dask-backed stays lazy
        for name, var in ds.variables.items()
        if isinstance(var.dtype, np.dtypes.StringDType)
    }
    ds = ds.assign_coords({k: v for k, v in strings.items() if k in ds.coords})
    ds = ds.assign({k: v for k, v in strings.items() if k not in ds.coords})
    ds = ds.set_xindex("patch_id")
    ds.encoding["source"] = url
    return ds


def patch(ds: xr.Dataset, patch_id: str, variable: str = "reflectance") -> xr.DataArray:
    """One patch of `ds` (from `open_store`) as a lazy DataArray georeferenced with rioxarray.

    `variable` is ``"reflectance"`` (dims band, y, x) or ``"land_cover"`` / ``"scl"`` (y, x). The
    result has the patch's CRS and affine transform (``.rio.crs``, ``.rio.transform()``), x/y
    coordinates of pixel centres, and its nodata (NaN or -32768 for reflectance, 0 for the
    class maps), so ``.rio.to_raster(path)`` and ``.rio.reproject("EPSG:4326")`` work. The
    patch's records (``status``, ``datetime``, ...) stay as scalar coordinates.
    """
    if variable not in GRIDDED:
        raise ValueError(f"variable {variable!r}: expected one of {', '.join(GRIDDED)}")
    one = ds.isel(patch=_position(ds, patch_id))
    # The patch's records are a few scalars: loaded in one go, so that `.item()` works on them.
    names = [str(n) for n, c in one.coords.items() if c.ndim == 0]
    rec = one.reset_coords()[[*names, "transform"]].compute()
    t = tuple(float(v) for v in rec["transform"].values)
    if t[1] or t[3]:
        raise StoreError(f"patch {patch_id!r} has a rotated transform {t}; not a north-up grid")
    affine = Affine(*t)
    da = one[variable]
    coords: dict[str, Any] = {n: rec[n].variable for n in names}
    coords["patch_id"] = ((), np.array(patch_id, dtype=object))  # a str, not a numpy.str_
    coords["x"] = ("x", t[2] + t[0] * (np.arange(da.sizes["x"]) + 0.5), {"units": "metre"})
    coords["y"] = ("y", t[5] + t[4] * (np.arange(da.sizes["y"]) + 0.5), {"units": "metre"})
    da = da.assign_coords(coords)
    rio = RasterArray(da)  # `da.rio`, spelt so that mypy sees rioxarray's types
    rio.write_crs(str(rec["crs"].item()), inplace=True)
    rio.write_transform(affine, inplace=True)
    if variable != "reflectance":  # reflectance carries its own fill value (attrs or encoding)
        rio.write_nodata(0, inplace=True)
    return da


def _position(ds: xr.Dataset, patch_id: str) -> int:
    # open_store indexes patch_id; a Dataset opened otherwise is searched once per call
    ids = ds.indexes["patch_id"] if "patch_id" in ds.indexes else ds["patch_id"].to_index()
    try:
        loc = ids.get_loc(patch_id)
    except KeyError as e:
        source = ds.encoding.get("source")
        where = f"the store {source}" if source else "this Dataset"
        near = []
        if len(ids) <= 100_000:  # difflib is too slow to be worth it on bigger stores
            near = difflib.get_close_matches(patch_id, [str(i) for i in ids], n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else "."
        raise UnknownPatchError(
            f"no patch {patch_id!r} in {where} ({len(ids)} patches){hint} "
            "List the ids with ds.patch_id.values."
        ) from e
    if not isinstance(loc, int):
        raise StoreError(f"patch id {patch_id!r} is in the store more than once")
    return loc
