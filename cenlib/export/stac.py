"""The dataset as a static STAC 1.1 Collection: one Item per patch, plain JSON dicts.

``stac/collection.json`` links every ``stac/items/<patch>.json``; hrefs are relative, so the
export can be copied or served anywhere. Each Item carries the patch's caption and provenance
as properties, its pixel grid (projection extension), its land-cover map as a raster label
(label extension, with per-class pixel counts) whose assets list the ChatEarthNet classes
(classification extension), and ``derived_from`` links to the Sentinel-2 and WorldCover items
it was made from. Links to sources whose API root is not an http(s) URL (the synthetic world)
are left out; the ids stay in the properties.

:func:`validate_stac` checks an Item or Collection offline: pystac ships the STAC 1.1.0 core
schemas, and the three extension schemas are vendored in ``schemas/`` (see its README).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

from cenlib.classes import CLASSES, by_name
from cenlib.errors import CenError
from cenlib.export.record import GEOTIFF, LABEL_TIFF, Record

STAC_VERSION = "1.1.0"
COLLECTION_ID = "chatearthnet"
ROOT = "../.."  # from stac/items/<patch>.json back to the export root
PNG = "image/png"
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
JSON, GEOJSON = "application/json", "application/geo+json"
EXT = {
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "label": "https://stac-extensions.github.io/label/v1.0.1/schema.json",
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
}
VENDORED = {
    EXT["projection"]: "projection-v2.0.0.json",
    EXT["label"]: "label-v1.0.1.json",
    EXT["classification"]: "classification-v2.0.0.json",
}
SOURCE_TITLES = {"sentinel2": "Sentinel-2 L2A item", "worldcover": "ESA WorldCover item"}
LICENSE = "CC-BY-4.0"
LICENSE_LINKS = (
    ("https://creativecommons.org/licenses/by/4.0/", "This dataset: CC BY 4.0"),
    (
        "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice",
        "Contains modified Copernicus Sentinel data (Sentinel-2 L2A)",
    ),
    (
        "https://creativecommons.org/licenses/by/4.0/",
        "Land cover: ESA WorldCover 10 m 2021 v200, © ESA WorldCover project 2021 (CC BY 4.0)",
    ),
)
PROVIDERS: tuple[dict[str, Any], ...] = (
    {
        "name": "European Space Agency / Copernicus",
        "description": "Sentinel-2 L2A surface reflectance",
        "roles": ["producer", "licensor"],
        "url": "https://sentinels.copernicus.eu",
    },
    {
        "name": "ESA WorldCover consortium",
        "description": "ESA WorldCover 10 m 2021 v200 land cover",
        "roles": ["producer", "licensor"],
        "url": "https://esa-worldcover.org",
    },
)
KEYWORDS = ("image-text", "captioning", "land cover", "Sentinel-2", "ESA WorldCover")
SPLIT_ORDER = ("train", "validation", "test")


class StacError(CenError, ValueError):
    """A record that makes no valid STAC, or a STAC document that fails its schemas."""


def stac_item(
    rec: Record, sources: Mapping[str, tuple[str, str]], *, geotiff: bool = True
) -> dict[str, Any]:
    """The STAC Item of one exported patch (``stac/items/<patch>.json``).

    ``sources`` maps ``sentinel2``/``worldcover`` to (STAC API root, collection id), the
    catalogue the patch's source items came from. ``geotiff=False`` leaves out the GeoTIFF
    assets when that format is not exported.
    """
    pixels = int(rec.shape[0]) * int(rec.shape[1])
    classes = classification_classes(_counts(rec, pixels), pixels)
    counts = [{"name": c["title"], "count": c["count"]} for c in classes]
    props: dict[str, Any] = {
        "datetime": rec.datetime,
        "caption": rec.caption,
        "split": rec.split,
        "model": rec.model,
        "endpoint": rec.endpoint,
        "style": rec.style,
        "request_key": rec.request_key,
        "verification": rec.verification,
        "review": rec.review,
        "repair_round": rec.repair_round,
        "grid": rec.grid,
        "sentinel2_items": list(rec.sentinel2_items),
        "worldcover_items": list(rec.worldcover_items),
        "proj:code": rec.crs,
        "proj:transform": [float(v) for v in rec.transform[:6]],
        "proj:shape": [int(v) for v in rec.shape],
        "label:type": "raster",
        "label:properties": None,
        "label:tasks": ["segmentation"],
        "label:methods": ["automated"],
        "label:description": (
            "ChatEarthNet land-cover class index per pixel (0 = background, no WorldCover "
            "value), mapped from ESA WorldCover; the caption describes this map"
        ),
        "label:classes": [{"name": None, "classes": [c.index for c in CLASSES]}],
        "label:overviews": [{"counts": counts}],
    }
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXT.values()),
        "id": rec.patch_id,
        "collection": COLLECTION_ID,
        "geometry": rec.footprint,
        "bbox": [float(v) for v in rec.bbox],
        "properties": props,
        "links": [
            *(
                {"rel": rel, "href": "../collection.json", "type": JSON}
                for rel in ("root", "parent", "collection")
            ),
            *_source_links(rec, sources),
        ],
        "assets": _assets(rec, classes, geotiff),
    }


def stac_collection(
    *,
    title: str,
    description: str,
    bbox: Sequence[float],
    interval: tuple[str | None, str | None],
    item_hrefs: Sequence[str],
    splits: Mapping[str, int],
    collection_id: str = COLLECTION_ID,
    license: str = LICENSE,
    providers: Sequence[Mapping[str, Any]] = PROVIDERS,
    keywords: Sequence[str] = KEYWORDS,
) -> dict[str, Any]:
    """The Collection (``stac/collection.json``) linking every item by ``item_hrefs``.

    ``item_hrefs`` are relative to the collection file (``./items/<patch>.json``), ``splits``
    counts patches per split, ``license`` is an SPDX id (or ``other``, then say which in the
    license links).
    """
    names = [s for s in SPLIT_ORDER if splits.get(s)] + sorted(
        s for s in splits if s not in SPLIT_ORDER and splits[s]
    )
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [EXT["classification"]],
        "id": collection_id,
        "title": title,
        "description": description,
        "keywords": list(keywords),
        "license": license,
        "providers": [dict(p) for p in providers],
        "extent": {
            "spatial": {"bbox": [[float(v) for v in bbox]]},
            "temporal": {"interval": [list(interval)]},
        },
        "summaries": {"split": names, "classification:classes": classification_classes()},
        "cen:splits": {s: int(splits[s]) for s in names},
        "links": [
            {"rel": "root", "href": "./collection.json", "type": JSON, "title": title},
            *({"rel": "license", "href": h, "title": t} for h, t in LICENSE_LINKS),
            *({"rel": "item", "href": h, "type": GEOJSON} for h in item_hrefs),
        ],
    }


def classification_classes(
    counts: Mapping[int, int] | None = None, pixels: int = 0
) -> list[dict[str, Any]]:
    """The 12 ChatEarthNet classes as classification-extension class objects.

    With ``counts`` (class index -> pixels) and the patch's ``pixels``, each object also says
    how many pixels, and what percentage, the class covers.
    """
    out = []
    for c in CLASSES:
        obj: dict[str, Any] = {
            "value": c.index,
            "name": c.name.replace(" ", "_"),  # the extension allows no spaces in names
            "title": c.name,
            "color_hint": c.color,
        }
        if c.index == 0:
            obj["nodata"] = True
        if counts is not None:
            n = int(counts.get(c.index, 0))
            obj["count"] = n
            obj["percentage"] = round(100.0 * n / pixels, 4) if pixels else 0.0
        out.append(obj)
    return out


def validate_stac(value: Mapping[str, Any]) -> list[str]:
    """Validate an Item or Collection against STAC 1.1.0 and its extensions, offline.

    Returns the schema URIs checked. Raises :class:`StacError` if the document fails one, or
    names a STAC version or an extension whose schema is not on this machine.
    """
    from pystac.errors import STACValidationError
    from pystac.validation import validate_dict

    what = f"{value.get('type', 'STAC object')} {value.get('id', '?')!r}"
    if value.get("stac_version") != STAC_VERSION:
        raise StacError(f"{what}: stac_version {value.get('stac_version')!r}; only 1.1.0 here")
    missing = [e for e in value.get("stac_extensions", []) if e not in VENDORED]
    if missing:
        raise StacError(
            f"{what}: no local schema for extension(s) {missing}; vendor them in "
            "cenlib/export/schemas/ to validate offline"
        )
    try:
        uris: list[str] = validate_dict(dict(value), validator=_validator())
    except STACValidationError as e:
        # pystac's message dumps the whole failing instance; say which schema, what and where.
        head, best = str(e).split("\n", 1)[0], _deepest(e.__cause__)
        if best is not None and hasattr(best, "json_path"):
            head += f": {str(getattr(best, 'message', best))[:300]} (at {best.json_path})"
        raise StacError(f"{what} is not valid STAC. {head}") from e
    return uris


def _deepest(err: Any) -> Any:
    """The innermost of the errors a oneOf/anyOf failure wraps, deepest in the document first
    (the Item branch's bad field, not the Collection branch's "type is not Collection")."""
    while getattr(err, "context", None):
        err = max(err.context, key=lambda sub: len(sub.absolute_path))
    return err


@functools.cache
def _validator() -> Any:
    from pystac.validation import JsonSchemaSTACValidator

    v = JsonSchemaSTACValidator()
    schemas = files("cenlib.export").joinpath("schemas")
    for uri, name in VENDORED.items():
        v.schema_cache[uri] = json.loads(schemas.joinpath(name).read_text(encoding="utf-8"))
    return v


def _counts(rec: Record, pixels: int) -> dict[int, int]:
    try:
        return {by_name(k).index: round(f * pixels) for k, f in rec.class_fractions.items()}
    except KeyError as e:
        raise StacError(f"patch {rec.patch_id}: class_fractions: {e.args[0]}") from e


def _source_links(rec: Record, sources: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    links = []
    for name, ids in (("sentinel2", rec.sentinel2_items), ("worldcover", rec.worldcover_items)):
        api, coll = sources.get(name, ("", ""))
        if not api.startswith(("http://", "https://")):
            continue
        for i in ids:
            href = f"{api.rstrip('/')}/collections/{coll}/items/{i}"
            title = f"{SOURCE_TITLES[name]} {i}"
            links.append({"rel": "derived_from", "href": href, "type": GEOJSON, "title": title})
            if name == "sentinel2":  # the label extension's "source imagery"
                links.append({"rel": "source", "href": href, "type": GEOJSON, "title": title})
    return links


def _assets(rec: Record, classes: list[dict[str, Any]], geotiff: bool) -> dict[str, Any]:
    assets: dict[str, Any] = {}
    for group, path in rec.images.items():
        href = f"{ROOT}/{path}"
        if group == "label":
            assets["label"] = {
                "href": href,
                "type": PNG,
                "title": "Land-cover map, class index as pixel value (paletted PNG)",
                "roles": ["labels", "labels-raster", "visual"],
                "classification:classes": classes,
            }
        else:
            rgb = group == "rgb"
            assets[group] = {
                "href": href,
                "type": PNG,
                "title": "True colour (B04, B03, B02), 8-bit" if rgb else f"{group}, 8-bit",
                "roles": ["visual", "overview"] if rgb else ["visual"],
            }
    if geotiff:
        assets["reflectance"] = {
            "href": f"{ROOT}/{GEOTIFF.format(patch=rec.patch_id)}",
            "type": COG,
            "title": "Surface reflectance x 10000 (scale 0.0001), Cloud-Optimized GeoTIFF",
            "roles": ["data", "reflectance"],
            "data_type": "int16",
            "nodata": -32768,
            "bands": [{"name": b} for b in rec.bands],
        }
        assets["land_cover"] = {
            "href": f"{ROOT}/{LABEL_TIFF.format(patch=rec.patch_id)}",
            "type": COG,
            "title": "Land-cover map, ChatEarthNet class index, Cloud-Optimized GeoTIFF",
            "roles": ["labels", "labels-raster", "data"],
            "data_type": "uint8",
            "nodata": 0,
            "classification:classes": classes,
        }
    return assets
