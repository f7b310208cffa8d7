"""Readers of what the export stage writes: where it is, and its table.

``export_root(run_dir)`` is ``<run>/export/chatearthnet`` (:data:`LAYOUT`); ``read_table`` reads
its Parquet parts (``parquet/*.parquet``, one row per exported patch, the columns of
:data:`.parquet.SCHEMA`) as one pandas DataFrame, without the image bytes unless asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cenlib.errors import CenError

LAYOUT = Path("export") / "chatearthnet"


class ExportReadError(CenError, FileNotFoundError):
    """No export in that run directory; says how to make one."""


def export_root(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / LAYOUT


def read_table(run_dir: str | os.PathLike[str], *, images: bool = False) -> Any:
    """The exported patches as a pandas DataFrame (sorted by patch id); ``images=True`` adds
    ``image_png`` and ``label_png`` when the export wrote them."""
    import pyarrow.dataset as pads

    parts = export_root(run_dir) / "parquet"
    if not any(parts.glob("*.parquet")):
        raise ExportReadError(
            f"no exported dataset under {parts}; run `cen export CONFIG` for that run first"
        )
    ds = pads.dataset(str(parts), format="parquet")
    names = [n for n in ds.schema.names if images or n not in ("image_png", "label_png")]
    df = ds.to_table(columns=names).to_pandas()
    return df.sort_values("patch_id", ignore_index=True)
