"""The Parquet parts: one row per patch with every field of its :class:`~.record.Record`.

Each export task writes ``parquet/<split>-<NNNNN>.parquet`` for its batch (a batch holds one
split), so the table is written with constant memory and read as one dataset by pandas
(``pd.read_parquet("parquet/")``), pyarrow, DuckDB and ``datasets.load_dataset("parquet",
data_files={"train": "parquet/train-*.parquet", ...})``. With ``export.parquet_images`` the rows
also hold the RGB PNG and the land-cover PNG as bytes (``image_png``, ``label_png``), so the
Parquet files alone are the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from cenlib.export.record import Record

PARQUET = "parquet/{split}-{part:05d}.parquet"

_STR = pa.string()
_STRS = pa.list_(pa.string())
_F64S = pa.list_(pa.float64())
SCHEMA = pa.schema(
    [
        ("patch_id", _STR),
        ("split", _STR),
        ("caption", _STR),
        ("model", _STR),
        ("endpoint", _STR),
        ("style", _STR),
        ("request_key", _STR),
        ("verification", _STR),
        ("repair_round", pa.int32()),
        ("review", _STR),
        ("datetime", _STR),
        ("sentinel2_items", _STRS),
        ("worldcover_items", _STRS),
        ("grid", _STR),
        ("crs", _STR),
        ("transform", _F64S),
        ("shape", pa.list_(pa.int32())),
        ("bbox", _F64S),
        ("footprint", _STR),  # GeoJSON Polygon, lon/lat
        ("bands", _STRS),
        ("class_fractions", _STR),  # JSON object: class name -> pixel share
        ("image", _STR),  # RGB PNG, relative to the export root
        ("label_image", _STR),
    ]
)
IMAGES = pa.schema([("image_png", pa.binary()), ("label_png", pa.binary())])


def schema(images: bool) -> pa.Schema:
    return pa.unify_schemas([SCHEMA, IMAGES]) if images else SCHEMA


def parquet_part(
    records: Sequence[Record], pngs: Mapping[str, tuple[bytes, bytes]] | None = None
) -> bytes:
    """A Parquet file of ``records``; with ``pngs`` (patch -> (RGB PNG, label PNG)) the images
    go in as bytes too."""
    cols: dict[str, list[object]] = {n: [] for n in schema(pngs is not None).names}
    for r in records:
        row = r.as_json()
        row["footprint"] = json.dumps(r.footprint, separators=(",", ":"))
        row["class_fractions"] = json.dumps(r.class_fractions, separators=(",", ":"))
        row["image"], row["label_image"] = r.images["rgb"], r.images["label"]
        if pngs is not None:
            row["image_png"], row["label_png"] = pngs[r.patch_id]
        for n, v in cols.items():
            v.append(row[n])
    table = pa.table(cols, schema=schema(pngs is not None))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())
