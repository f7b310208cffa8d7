"""Stage *analyze*: class counts per region and layout descriptors of every patch.

``kernels``: region counts and fractions (pure, vectorised); ``layout``: components, shapes and
edge contact per class; ``stage``: the one Dask wrapper over the run's Zarr store.
"""

from cenlib.analysis.kernels import (
    CEN_REGIONS,
    GRID3,
    REGIONS,
    fractions,
    region_boxes,
    region_counts,
    region_counts_bincount,
    region_index,
)
from cenlib.analysis.layout import (
    EDGES,
    LAYOUT_DTYPE,
    LAYOUT_FIELDS,
    class_layout,
    edge_names,
    layout,
    orientation_name,
    patch_layout,
)
from cenlib.analysis.stage import analyze_block, analyze_store, patch_table, slug

__all__ = [
    "CEN_REGIONS",
    "EDGES",
    "GRID3",
    "LAYOUT_DTYPE",
    "LAYOUT_FIELDS",
    "REGIONS",
    "analyze_block",
    "analyze_store",
    "class_layout",
    "edge_names",
    "fractions",
    "layout",
    "orientation_name",
    "patch_layout",
    "patch_table",
    "region_boxes",
    "region_counts",
    "region_counts_bincount",
    "region_index",
    "slug",
]
