"""Stage *search*: Sentinel-2 and WorldCover items for groups of patches or areas, on Dask.

Entry: :func:`run_search` (any list of areas) and :func:`search_patches` (the groups of a
plan's patches). Reader: :func:`read_items`.
"""

from cenlib.search.stage import (
    Aoi,
    SearchFailedError,
    SearchSummary,
    patch_groups,
    read_items,
    run_search,
    search_patches,
)

__all__ = [
    "Aoi",
    "SearchFailedError",
    "SearchSummary",
    "patch_groups",
    "read_items",
    "run_search",
    "search_patches",
]
