"""Stage *ingest*: Sentinel-2 and WorldCover onto every planned patch, into one Zarr store.

Entry: :func:`run_ingest`. Readers of what it writes: :func:`open_store` (the store as a lazy
xarray Dataset) and :func:`patch` (one patch as a georeferenced DataArray, rioxarray-ready),
:func:`store_url` (where the run's store is), :func:`open_group` and :func:`array` (the Zarr
store itself, for stages that read it block by block), :func:`true_colour` (RGB of a patch's
reflectance). Modules: ``stage`` (the Dask
tasks), ``scenes`` (scene choice), ``read`` (windowed reads onto the patch grid), ``store`` (the
Zarr layout), ``sheet`` (the contact sheet), ``dataset`` (the xarray readers), ``run`` (the entry).
"""

from cenlib.ingest.dataset import UnknownPatchError, open_store, patch
from cenlib.ingest.run import PREVIEW, run_ingest
from cenlib.ingest.sheet import contact_sheet, true_colour
from cenlib.ingest.stage import IngestSummary, failure_rows, ingest_patches, store_url
from cenlib.ingest.store import StoreError, array, open_group

__all__ = [
    "PREVIEW",
    "IngestSummary",
    "StoreError",
    "UnknownPatchError",
    "array",
    "contact_sheet",
    "failure_rows",
    "ingest_patches",
    "open_group",
    "open_store",
    "patch",
    "run_ingest",
    "store_url",
    "true_colour",
]
