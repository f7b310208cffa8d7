"""One export task: a batch of patches of one split, every per-patch file of every format.

A :class:`Batch` is ``export.batch`` patches of one split, in patch-id order, numbered within the
split (``part``). :func:`export_batch`, a Dask task, reads only those rows of the ingest store
(orthogonal selections of the 1-D records, one chunk read per patch for the rasters), builds each
patch's :class:`~.record.Record` and writes, as ``export.formats`` asks: the PNGs of
ChatEarthNet's layout, a GeoTIFF pair, a STAC item, the batch's WebDataset shard and its Parquet
part. Memory is that of one batch, whatever the size of the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cenlib.classes import CLASS_NAMES
from cenlib.config import GridConfig
from cenlib.export.geotiff import geotiff_bytes, label_tiff_bytes
from cenlib.export.images import GROUPS, groups_of, label_png, png, to_8bit
from cenlib.export.parquet import PARQUET, parquet_part
from cenlib.export.record import GEOTIFF, IMAGE, LABEL_TIFF, STAC_ITEM, Record
from cenlib.export.shards import SHARD, shard_bytes
from cenlib.export.sink import Sink
from cenlib.export.stac import stac_item
from cenlib.grid import grid_for
from cenlib.ingest import array, open_group


@dataclass(frozen=True)
class Item:
    """A patch chosen for export, as the driver knows it (no pixels, no store records)."""

    patch_id: str
    index: int  # store row
    caption: str
    model: str
    split: str
    endpoint: str = ""
    style: str = ""
    key: str = ""
    status: str = ""  # verification: pass, repaired, failed
    decision: str = ""  # review: accept, edit, reject, or ""
    round: int = 0  # repair round of the caption


@dataclass(frozen=True)
class Batch:
    split: str
    part: int
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Options:
    formats: tuple[str, ...]
    parquet_images: bool
    stretch: dict[str, Any]
    grid: GridConfig
    sources: dict[str, tuple[str, str]]  # sentinel2 / worldcover -> (STAC API, collection)
    png_level: int = 6  # zlib level of the PNGs


@dataclass(frozen=True)
class Written:
    files: int
    bytes: int
    items: tuple[str, ...]  # STAC item files, relative to the export root


def _records(g: Any, batch: Batch, bands: list[str], grid: Any) -> list[Record]:
    rows = np.array([i.index for i in batch.items], dtype=np.int64)
    col = {
        n: np.asarray(array(g, n).get_orthogonal_selection((rows,)))
        for n in ("datetime", "s2_items", "wc_items", "crs")
    }
    transform = np.asarray(array(g, "transform").get_orthogonal_selection((rows, slice(None))))
    counts = np.asarray(array(g, "region_counts").get_orthogonal_selection((rows, 0, slice(None))))
    size = int(array(g, "land_cover").shape[-1])
    out = []
    for k, it in enumerate(batch.items):
        poly = grid.key(it.patch_id).lonlat_polygon()
        bb = poly.boundingbox
        total = max(int(counts[k].sum()), 1)
        out.append(
            Record(
                patch_id=it.patch_id,
                split=it.split,
                caption=it.caption,
                model=it.model,
                endpoint=it.endpoint,
                style=it.style,
                request_key=it.key,
                verification=it.status,
                repair_round=it.round,
                review=it.decision,
                datetime=str(np.datetime_as_string(col["datetime"][k], unit="s")) + "Z",
                sentinel2_items=[s for s in str(col["s2_items"][k]).split(",") if s],
                worldcover_items=[s for s in str(col["wc_items"][k]).split(",") if s],
                grid=grid.kind,
                crs=str(col["crs"][k]),
                transform=[float(v) for v in transform[k]],
                shape=[size, size],
                bbox=[bb.left, bb.bottom, bb.right, bb.top],
                footprint=poly.json,
                bands=bands,
                class_fractions={
                    CLASS_NAMES[c]: round(int(n) / total, 6) for c, n in enumerate(counts[k]) if n
                },
                images={
                    name: IMAGE.format(group=name, patch=it.patch_id)
                    for name in [*groups_of(bands), "label"]
                },
            )
        )
    return out


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode()


def export_batch(url: str, out: str, batch: Batch, opts: Options) -> Written:
    """Write every per-patch file of ``batch`` under the export at ``out`` (a Dask task)."""
    sink = Sink(out)
    g = open_group(url)
    bands = [str(b) for b in np.asarray(array(g, "band")[:])]
    refl_a, lc_a = array(g, "reflectance"), array(g, "land_cover")
    grid = grid_for(opts.grid)
    records = _records(g, batch, bands, grid)
    want = set(opts.formats)
    files = size = 0
    samples: list[tuple[Record, bytes, bytes]] = []
    items: list[str] = []
    for rec, it in zip(records, batch.items, strict=True):
        refl, lc = np.asarray(refl_a[it.index]), np.asarray(lc_a[it.index])
        rgb = b""
        for name in groups_of(bands):
            data = png(to_8bit(refl, bands, GROUPS[name], opts.stretch), opts.png_level)
            rgb = data if name == "rgb" else rgb
            size += sink.write(rec.images[name], data)
            files += 1
        lab = label_png(lc, opts.png_level)
        size += sink.write(rec.images["label"], lab)
        files += 1
        samples.append((rec, rgb, lab))
        if "geotiff" in want:
            size += sink.write(
                GEOTIFF.format(patch=rec.patch_id),
                geotiff_bytes(refl, bands, rec.crs, rec.transform),
            )
            size += sink.write(
                LABEL_TIFF.format(patch=rec.patch_id),
                label_tiff_bytes(lc, rec.crs, rec.transform),
            )
            files += 2
        if "stac" in want:
            name = STAC_ITEM.format(patch=rec.patch_id)
            item = stac_item(rec, opts.sources, geotiff="geotiff" in want)
            size += sink.write(name, _json(item))
            items.append(name)
            files += 1
    if "webdataset" in want and samples:
        size += sink.write(SHARD.format(split=batch.split, part=batch.part), shard_bytes(samples))
        files += 1
    if "parquet" in want and samples:
        pngs = {r.patch_id: (a, b) for r, a, b in samples} if opts.parquet_images else None
        data = parquet_part(records, pngs)
        size += sink.write(PARQUET.format(split=batch.split, part=batch.part), data)
        files += 1
    return Written(files, size, tuple(items))


def batches(items: Sequence[Item], size: int, splits: Sequence[str]) -> list[Batch]:
    """``items`` as batches of ``size`` patches of one split, in patch-id order."""
    out = []
    for split in splits:
        mine = sorted((i for i in items if i.split == split), key=lambda i: i.patch_id)
        for part, s in enumerate(range(0, len(mine), size)):
            out.append(Batch(split, part, tuple(mine[s : s + size])))
    return out
