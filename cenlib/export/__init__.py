"""Stage *export* (in progress): the dataset in the formats trainers read.

Entry: :func:`run_export` ``(cfg, client)`` -> :class:`ExportSummary`: so far ChatEarthNet's
layout (8-bit PNGs per patch, caption files per model and split) under
``<output>/export/chatearthnet/`` (:data:`LAYOUT`). :func:`assign_splits`: train / validation /
test splits that are spatially disjoint (every patch of a block in one split), reproducible
from the seed, optionally stratified. The other formats, the dataset card and the report are
the next steps (issue 12).
"""

from cenlib.export.splits import (
    DEFAULT_RATIOS,
    SPLITS,
    SplitError,
    assign_splits,
    block_of,
)
from cenlib.export.stage import LAYOUT, ExportError, ExportSummary, run_export

__all__ = [
    "DEFAULT_RATIOS",
    "LAYOUT",
    "SPLITS",
    "ExportError",
    "ExportSummary",
    "SplitError",
    "assign_splits",
    "block_of",
    "run_export",
]
