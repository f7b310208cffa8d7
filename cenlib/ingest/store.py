"""The run's Zarr v3 store: layout, whole-shard writes, resume.

Layout (one row per planned patch, in plan order; ``S`` = ``ingest.shard_patches``)::

    reflectance  (patch, band, y, x) int16   reflectance * 10000, -32768 = no data;
                                             chunk = 1 patch, shard = S patches
    land_cover   (patch, y, x)       uint8   ChatEarthNet class index 0..11 (0 = background);
                                             chunk = S patches (no sharding)
    scl          (patch, y, x)       uint8   Sentinel-2 scene classification (0 = no data);
                                             chunk = S patches
    band         (band)              str     band names (Earth Search keys)
    patch_id, grid, tile, crs, status, reason, s2_items, wc_items, issues, season   (patch) str
    center_lon, center_lat           (patch) float64
    transform    (patch, 6)          float64 affine a, b, c, d, e, f of the patch's pixel grid
    datetime     (patch)             datetime64[ns] acquisition (NaT if none)
    cloud_fraction, nodata_fraction, wc_valid_fraction   (patch) float32
    shard_done   (shard)             uint8   1 once every array of that shard is written

Every task writes whole shards (parallel partial-shard writes corrupt data: zarr-python#3682)
and the 1-D arrays are chunked by shard, so a task owns every chunk it touches. ``shard_done``
is written last; a shard without it is simply written again on resume.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
import zarr.api.asynchronous
from zarr import AsyncArray
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.sync import sync

from cenlib.errors import CenError

STORE_VERSION = 2
STR_FIELDS = (
    "patch_id",
    "grid",
    "tile",
    "crs",
    "status",
    "reason",
    "s2_items",
    "wc_items",
    "issues",
    "season",
)
F64_FIELDS = ("center_lon", "center_lat")
F32_FIELDS = ("cloud_fraction", "nodata_fraction", "wc_valid_fraction")
COORDS = " ".join((*STR_FIELDS, *F64_FIELDS, "transform", "datetime", *F32_FIELDS))


class StoreError(CenError, RuntimeError):
    """The store cannot be used for this run; the message says why and what to do."""


@dataclass(frozen=True)
class StoreSpec:
    url: str  # local path or fsspec URL
    n_patches: int
    shard: int
    bands: tuple[str, ...]
    size: int
    fingerprint: str  # of everything that decides the arrays' bytes

    @property
    def n_shards(self) -> int:
        return -(-self.n_patches // self.shard)

    def shard_range(self, i: int) -> tuple[int, int]:
        return i * self.shard, min((i + 1) * self.shard, self.n_patches)


def _store_args(url: str) -> tuple[str, dict[str, Any] | None]:
    if url.startswith("file://"):
        return url, {"auto_mkdir": True}  # fsspec's local filesystem does not make parents
    return url, None


def open_group(url: str, mode: str = "r") -> zarr.Group:
    """Open the store at a local path or any fsspec URL (``file://``, ``memory://``, ``s3://``)."""
    store, opts = _store_args(url)
    if "://" not in url:
        return zarr.open_group(store, mode=mode)  # type: ignore[arg-type]
    return zarr.open_group(store, mode=mode, storage_options=opts)  # type: ignore[arg-type]


def _exists(url: str) -> bool:
    try:
        open_group(url, "r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return False
    return True


def _arrays(spec: StoreSpec) -> dict[str, dict[str, Any]]:
    """Every array of the layout above: name -> ``create_array`` arguments."""
    n, s, nb, px = spec.n_patches, spec.shard, len(spec.bands), spec.size
    patch: dict[str, Any] = {"shape": (n,), "chunks": (s,), "dimension_names": ("patch",)}
    zstd = (ZstdCodec(level=3),)
    out: dict[str, dict[str, Any]] = {
        "reflectance": {
            "shape": (n, nb, px, px),
            "chunks": (1, nb, px, px),
            "shards": (s, nb, px, px),
            "dtype": "int16",
            "fill_value": -32768,
            "dimension_names": ("patch", "band", "y", "x"),
            "attributes": {
                "scale_factor": 0.0001,
                "_FillValue": -32768,
                "units": "1",
                "long_name": "surface reflectance",
                "coordinates": COORDS,
            },
            # Byte-shuffled zstd at level 1: on the synthetic and the real scenes, smaller than
            # plain zstd at level 3 (x4.30 against x3.71; x2.14 against x2.06) and encoded in
            # half the time (benchmarks/README.md).
            "compressors": (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=2),),
        },
    }
    for name, desc in (
        ("land_cover", "ChatEarthNet land-cover class index (0 = background)"),
        ("scl", "Sentinel-2 scene classification (0 = no data)"),
    ):
        # One chunk per shard: zarr-python spends ~300 us per chunk it decodes, more than a
        # 64 KiB class map costs to read, and the analysis reads these maps whole shards at once.
        out[name] = {
            "shape": (n, px, px),
            "chunks": (s, px, px),
            "dtype": "uint8",
            "fill_value": 0,
            "dimension_names": ("patch", "y", "x"),
            "attributes": {"long_name": desc, "coordinates": COORDS},
            "compressors": zstd,
        }
    out["band"] = {"shape": (nb,), "dtype": str, "dimension_names": ("band",)}
    out |= {name: {**patch, "dtype": str} for name in STR_FIELDS}
    for name, dtype in [(f, "float64") for f in F64_FIELDS] + [(f, "float32") for f in F32_FIELDS]:
        out[name] = {**patch, "dtype": dtype, "fill_value": np.nan}
    out["transform"] = {
        "shape": (n, 6),
        "chunks": (s, 6),
        "dtype": "float64",
        "fill_value": np.nan,
        "dimension_names": ("patch", "affine"),
    }
    out["datetime"] = {**patch, "dtype": "datetime64[ns]"}
    out["shard_done"] = {
        "shape": (spec.n_shards,),
        "chunks": (1,),
        "dtype": "uint8",
        "fill_value": 0,
        "dimension_names": ("shard",),
    }
    return out


def _create(spec: StoreSpec, attrs: dict[str, Any]) -> None:
    """A new, empty store: its arrays' metadata written at once (zarr's async API), the
    group's attributes last."""

    async def create() -> None:
        store, opts = _store_args(spec.url)
        g = await zarr.api.asynchronous.open_group(store=store, mode="w", storage_options=opts)
        layout = _arrays(spec)
        made = dict(
            zip(
                layout,
                await asyncio.gather(*(g.create_array(n, **kw) for n, kw in layout.items())),
                strict=True,
            )
        )
        await made["band"].setitem(slice(None), np.array(spec.bands))
        await g.update_attributes(
            {
                **attrs,
                "fingerprint": spec.fingerprint,
                "store_version": STORE_VERSION,
                "shard_patches": spec.shard,
            }
        )

    sync(create())


def create_or_open(
    spec: StoreSpec, attrs: dict[str, Any], replace: bool = False
) -> tuple[zarr.Group, bool]:
    """Open the store for this run, creating its arrays the first time; and whether it was
    created now (then no shard of it is done).

    A store made by a different plan or config is refused rather than mixed with this run, or
    replaced when `replace` is set and it is a store of ours (never anything else).
    """
    if _exists(spec.url):
        g = open_group(spec.url, "r+")
        found = g.attrs.get("fingerprint")
        if found == spec.fingerprint:
            return g, False
        if not (replace and "store_version" in g.attrs):
            raise StoreError(
                f"Zarr store {spec.url} was written by another plan or configuration "
                f"(fingerprint {str(found)[:12]}, this run {spec.fingerprint[:12]}); "
                "delete it, set ingest.store to a new location, or set "
                "ingest.replace_foreign: true"
            )
    _create(spec, attrs)
    return open_group(spec.url, "r+"), True


def array(g: zarr.Group, name: str) -> zarr.Array[Any]:
    """A named array of the store (an error naming the store if it is missing)."""
    a = g.get(name)
    if not isinstance(a, zarr.Array):
        raise StoreError(f"Zarr store {g.store} has no array {name!r}; was it made by cen ingest?")
    return a


def done_shards(g: zarr.Group) -> set[int]:
    flags = np.asarray(array(g, "shard_done")[:])
    return {int(i) for i in np.flatnonzero(flags)}


@dataclass
class ShardData:
    """Everything one task writes: arrays for patches [start, stop) of the store."""

    start: int
    reflectance: npt.NDArray[np.int16]
    land_cover: npt.NDArray[np.uint8]
    scl: npt.NDArray[np.uint8]
    fields: dict[str, npt.NDArray[Any]]


def write_shard(url: str, index: int, data: ShardData) -> int:
    """Write one whole shard, then mark it done; returns bytes of pixel data written.

    The arrays of a shard are written concurrently (zarr's async API: one round of metadata
    reads and encodes in parallel instead of one blocking call per array), the flag last.
    """
    region = slice(data.start, data.start + len(data.reflectance))
    values: dict[str, npt.NDArray[Any]] = {
        "reflectance": data.reflectance,
        "land_cover": data.land_cover,
        "scl": data.scl,
        **data.fields,
    }

    async def write() -> None:
        store, opts = _store_args(url)
        g = await zarr.api.asynchronous.open_group(store=store, mode="r+", storage_options=opts)

        async def get(name: str) -> AsyncArray[Any]:
            a = await g.getitem(name)
            if not isinstance(a, AsyncArray):
                raise StoreError(f"Zarr store {url}: {name!r} is not an array")
            return a

        arrays = await asyncio.gather(*(get(name) for name in values))
        await asyncio.gather(
            *(a.setitem(region, v) for a, v in zip(arrays, values.values(), strict=True))
        )
        await (await get("shard_done")).setitem(index, 1)

    sync(write())
    return int(data.reflectance.nbytes + data.land_cover.nbytes + data.scl.nbytes)
