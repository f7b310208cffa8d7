"""Stage *export*: the dataset in ChatEarthNet's layout and the formats trainers read.

Entry: :func:`run_export` ``(cfg, client)`` -> :class:`ExportSummary`: under ``export.output``
(default ``<output>/export/chatearthnet/``, :data:`LAYOUT`) ChatEarthNet's PNGs and caption
files, LLaVA conversations, Parquet parts, WebDataset shards, GeoTIFFs, a static STAC
collection, Croissant metadata and the dataset card (see :mod:`cenlib.export.stage`).
:func:`assign_splits`: train / validation / test splits that are spatially disjoint (every
patch of a block in one split), reproducible from the seed, optionally stratified.
Readers: :func:`export_root` (where a run's export is), :func:`read_table` (its rows),
:class:`Record` (the fields of a row).
"""

from cenlib.export.read import LAYOUT, ExportReadError, export_root, read_table
from cenlib.export.record import Record
from cenlib.export.splits import (
    DEFAULT_RATIOS,
    SPLITS,
    SplitError,
    assign_splits,
    block_of,
)
from cenlib.export.stage import ExportError, ExportSummary, export_url, run_export

__all__ = [
    "DEFAULT_RATIOS",
    "LAYOUT",
    "SPLITS",
    "ExportError",
    "ExportReadError",
    "ExportSummary",
    "Record",
    "SplitError",
    "assign_splits",
    "block_of",
    "export_root",
    "export_url",
    "read_table",
    "run_export",
]
