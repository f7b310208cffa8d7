"""Stage *analyze*: class counts per region and layout descriptors of every patch.

Entry: :func:`run_analysis`. Readers of what it writes: :func:`read_statistics` (the table),
:func:`read_layouts`, :func:`read_region_counts`. The pure kernels (``region_counts``,
``layout``...) are public too: the prompt preview runs them on a single label image.
Modules: ``kernels`` (region counts and fractions), ``layout`` (components, shapes, edge
contact), ``stage`` (the Dask wrapper over the run's store), ``read`` (the readers).
"""

from cenlib.analysis.kernels import (
    CEN_REGIONS,
    GRID3,
    REGIONS,
    fractions,
    region_boxes,
    region_counts,
    region_index,
)
from cenlib.analysis.layout import LAYOUT_FIELDS, class_layout, layout, patch_layout
from cenlib.analysis.read import (
    TABLE,
    layout_columns,
    read_layouts,
    read_region_counts,
    read_statistics,
    table_path,
)
from cenlib.analysis.stage import AnalysisSummary, analyze_store, run_analysis

__all__ = [
    "CEN_REGIONS",
    "GRID3",
    "LAYOUT_FIELDS",
    "REGIONS",
    "TABLE",
    "AnalysisSummary",
    "analyze_store",
    "class_layout",
    "fractions",
    "layout",
    "layout_columns",
    "patch_layout",
    "read_layouts",
    "read_region_counts",
    "read_statistics",
    "region_boxes",
    "region_counts",
    "region_index",
    "run_analysis",
    "table_path",
]
