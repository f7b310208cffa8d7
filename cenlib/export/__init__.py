"""Stage *export* (in progress): the dataset in the formats trainers read.

So far: :func:`assign_splits`, train / validation / test splits that are spatially disjoint
(every patch of a block in one split) and reproducible from the seed, optionally stratified;
:func:`block_of`. The entry ``run_export`` and the formats are the next steps (issue 12).
"""

from cenlib.export.splits import (
    DEFAULT_RATIOS,
    SPLITS,
    SplitError,
    assign_splits,
    block_of,
)

__all__ = ["DEFAULT_RATIOS", "SPLITS", "SplitError", "assign_splits", "block_of"]
