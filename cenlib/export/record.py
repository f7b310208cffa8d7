"""One exported patch: its caption and every field of its provenance, as each format writes it.

The export stage builds one :class:`Record` per exported patch (from the verdicts, the captions,
the review decisions and the ingest store) and hands them, a batch at a time, to the format
writers (:mod:`.shards`, :mod:`.stac`, :mod:`.geotiff`, the Parquet parts) inside Dask tasks.
File names are relative to the export root (``<output>/export/chatearthnet/``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Image groups -> directory under images/ (the label map is "label").
IMAGE = "images/{group}/{patch}.png"
GEOTIFF = "geotiff/{patch}.tif"
LABEL_TIFF = "geotiff/{patch}_label.tif"
STAC_ITEM = "stac/items/{patch}.json"  # the collection is stac/collection.json


@dataclass(frozen=True)
class Record:
    """One exported patch. Strings are empty when a field is unknown (e.g. no review)."""

    patch_id: str
    split: str  # train, validation, test
    caption: str
    model: str  # the caption model, as the endpoint named it
    endpoint: str  # the caption endpoint's name in caption.endpoints
    style: str  # prompt style, name@version
    request_key: str  # the request key of the caption's answer
    verification: str  # pass, repaired, failed
    repair_round: int  # 0 for a first caption
    review: str  # accept, edit, reject, or "" (not reviewed)
    datetime: str  # acquisition, ISO 8601 UTC with a Z ("2021-07-14T10:20:31Z")
    sentinel2_items: list[str]  # STAC item ids the reflectance came from
    worldcover_items: list[str]  # STAC item ids the land-cover map came from
    grid: str  # chatearthnet or utm
    crs: str  # of the patch's pixel grid, e.g. "EPSG:3857"
    transform: list[float]  # affine a, b, c, d, e, f of the pixel grid (rasterio order)
    shape: list[int]  # [height, width] in pixels
    bbox: list[float]  # [west, south, east, north] in lon/lat
    footprint: dict[str, Any]  # GeoJSON Polygon in lon/lat
    bands: list[str]  # reflectance bands in the GeoTIFF, in order (Earth Search names)
    class_fractions: dict[str, float]  # ChatEarthNet class name -> share of the patch's pixels
    images: dict[str, str] = field(default_factory=dict)  # group (rgb, ..., label) -> file

    @property
    def image(self) -> str:
        """The RGB PNG, the image every caption file points at."""
        return self.images["rgb"]

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
