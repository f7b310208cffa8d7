"""Readers of what the analyze stage writes: the statistics table and the region counts.

Later stages read these, never the column names or array layout themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from cenlib.analysis.layout import LAYOUT_FIELDS, class_layout
from cenlib.classes import CLASS_NAMES, NUM_CLASSES

TABLE = "analysis.parquet"
COUNTS_ARRAY = "region_counts"


def slug(name: str) -> str:
    """Column-name form of a region or class name: ``top left`` -> ``top_left``."""
    return name.replace(" ", "_")


def table_path(run_dir: Path) -> Path:
    """Where the analyze stage of the run at ``run_dir`` writes its table."""
    return Path(run_dir) / TABLE


def read_statistics(run_dir: Path, columns: list[str] | None = None) -> pa.Table:
    """The run's statistics table (one row per store patch; columns in
    :mod:`cenlib.analysis.stage`); raises ``FileNotFoundError`` saying what to run."""
    path = table_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no analysis table at {path}; run `cen analyze CONFIG` first")
    return pq.read_table(path, columns=columns)


def layout_columns() -> list[str]:
    """The table's layout columns, class by class (classes 1..11)."""
    return [f"{f}_{slug(CLASS_NAMES[k])}" for k in range(1, NUM_CLASSES) for f in LAYOUT_FIELDS]


def read_layouts(table: Path | str, start: int, stop: int) -> list[dict[int, dict[str, Any]]]:
    """Layout records of rows [start, stop) of the table, reading only their row groups: per
    patch, ``{class index: class_layout dict}`` for the classes present."""
    f = pq.ParquetFile(table)
    cols = layout_columns()
    first = 0
    parts = []
    for g in range(f.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if first < stop and first + n > start:
            t = f.read_row_group(g, columns=cols).slice(max(0, start - first), stop - first)
            parts.append(t.to_pydict())
        first += n
    out: list[dict[int, dict[str, Any]]] = []
    for part in parts:
        for row in range(len(next(iter(part.values())))):
            per: dict[int, dict[str, Any]] = {}
            for k in range(1, NUM_CLASSES):
                name = slug(CLASS_NAMES[k])
                rec = {fld: part[f"{fld}_{name}"][row] for fld in LAYOUT_FIELDS}
                if rec["components"] and rec["components"] > 0:
                    per[k] = class_layout({f: (np.nan if v is None else v) for f, v in rec.items()})
            out.append(per)
    return out


def read_region_counts(group: Any, start: int, stop: int) -> npt.NDArray[np.int32]:
    """``(patch, region, class)`` pixel counts of patches [start, stop) from the run's store
    (an open zarr group, as :func:`cenlib.ingest.open_group` gives)."""
    if COUNTS_ARRAY not in group:
        raise FileNotFoundError(
            f"the store has no {COUNTS_ARRAY} array; run `cen analyze CONFIG` first"
        )
    return np.asarray(group[COUNTS_ARRAY][start:stop], dtype=np.int32)
