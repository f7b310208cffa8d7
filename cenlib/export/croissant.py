"""Croissant 1.1 metadata (``croissant.json``) describing the export through its Parquet parts.

The JSON-LD has one FileSet, ``parquet-parts`` (the parts, named by path or glob relative to
the export root, where ``croissant.json`` sits), and two RecordSets:

- ``splits``: a ``cr:Split`` enumeration (train -> ``cr:TrainingSplit``, ...), inline data;
- ``patches``: one record per patch, one field per column of the Parquet schema
  (:data:`~.parquet.SCHEMA`, plus ``image_png`` / ``label_png`` as ``sc:ImageObject`` when the
  parts carry the PNGs); list columns are ``isArray`` fields, ``split`` references
  ``splits/name``, ``patch_id`` is the key.

So ``mlcroissant.Dataset(jsonld="croissant.json").records("patches")`` reads the dataset
offline (text comes back as bytes). The fields follow the schema, so a new column needs no
change here unless its Arrow type is new (then :func:`croissant` says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from cenlib.export.parquet import schema

CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
CC_BY_4 = "https://creativecommons.org/licenses/by/4.0/"
ATTRIBUTION = (
    "Contains modified Copernicus Sentinel data (Sentinel-2 L2A); land cover from ESA WorldCover "
    "10 m 2021 v200 (CC BY 4.0)."
)
FILESET = "parquet-parts"

# Croissant's split vocabulary; other names are allowed but carry no standard meaning.
SPLIT_URLS = {
    "train": "cr:TrainingSplit",
    "validation": "cr:ValidationSplit",
    "test": "cr:TestSplit",
}

# The standard 1.1 @context (mlcroissant warns about any key it expects and does not find).
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

DESCRIPTIONS = {
    "patch_id": "Patch id on the export grid ({col}_{row}_patch{r}{c} on the chatearthnet grid).",
    "split": "The split the patch belongs to (spatially disjoint blocks).",
    "caption": "The land-cover caption of the patch.",
    "model": "The caption model, as its endpoint named it.",
    "endpoint": "The caption endpoint's name in the run's configuration.",
    "style": "The prompt style, name@version.",
    "request_key": "The request key of the caption's answer.",
    "verification": "The caption's check against the land cover: pass, repaired or failed.",
    "repair_round": "0 for a first caption, n for the n-th repair.",
    "review": "Human review: accept, edit, reject, or empty (not reviewed).",
    "datetime": "Sentinel-2 acquisition time, ISO 8601 UTC.",
    "sentinel2_items": "STAC ids of the Sentinel-2 L2A items the reflectance came from.",
    "worldcover_items": "STAC ids of the ESA WorldCover items the land cover came from.",
    "grid": "The patch grid: chatearthnet (Web Mercator zoom 13) or utm.",
    "crs": "CRS of the patch's pixel grid.",
    "transform": "Affine transform a, b, c, d, e, f of the pixel grid (rasterio order).",
    "shape": "Height and width in pixels.",
    "bbox": "West, south, east, north in degrees of longitude and latitude.",
    "footprint": "The patch outline, a GeoJSON Polygon in longitude and latitude.",
    "bands": "Reflectance bands of the GeoTIFF, in order.",
    "class_fractions": "JSON object: ChatEarthNet class name -> share of the patch's pixels.",
    "image": "The RGB PNG, relative to the export root.",
    "label_image": "The land-cover PNG (ChatEarthNet class indices), relative to the root.",
    "image_png": "The RGB PNG.",
    "label_png": "The land-cover PNG (ChatEarthNet class indices).",
}

_TYPES = {pa.string(): "sc:Text", pa.int32(): "sc:Integer", pa.int64(): "sc:Integer"}
_TYPES |= {pa.float64(): "sc:Float", pa.float32(): "sc:Float", pa.binary(): "sc:ImageObject"}
_OVERRIDES = {"datetime": "sc:DateTime", "image": "sc:URL", "label_image": "sc:URL"}
_SHAPES = {"transform": "6", "shape": "2", "bbox": "4"}


def croissant(
    *,
    name: str,
    description: str,
    url: str,
    version: str,
    license: str = CC_BY_4,
    citation: str,
    date_published: str,
    parquet_files: Sequence[str] = ("parquet/*.parquet",),
    images: bool,
    splits: Sequence[str],
) -> dict[str, Any]:
    """The Croissant JSON-LD of an export (see the module doc). ``parquet_files`` are the parts'
    paths or globs relative to the export root; ``images``: the parts hold the PNG bytes."""
    if not parquet_files:
        raise ValueError("croissant: no Parquet parts to describe (parquet_files is empty)")
    if "Copernicus" not in description:
        description = f"{description.rstrip()} {ATTRIBUTION}"
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": name,
        "description": description,
        "conformsTo": CONFORMS_TO,
        "citeAs": citation,
        "creditText": ATTRIBUTION,
        "license": license,
        "url": url,
        "version": version,
        "datePublished": date_published,
        "keywords": ["remote sensing", "Sentinel-2", "land cover", "image captioning"],
        "distribution": [
            {
                "@type": "cr:FileSet",
                "@id": FILESET,
                "name": FILESET,
                "description": "The Parquet parts, one row per patch.",
                "encodingFormat": "application/x-parquet",
                "includes": list(parquet_files),
            }
        ],
        "recordSet": [_splits(splits), _patches(images)],
    }


def _splits(splits: Sequence[str]) -> dict[str, Any]:
    return {
        "@type": "cr:RecordSet",
        "@id": "splits",
        "name": "splits",
        "description": "The dataset's splits.",
        "dataType": "cr:Split",
        "key": {"@id": "splits/name"},
        "field": [
            {"@type": "cr:Field", "@id": "splits/name", "name": "name", "dataType": "sc:Text"},
            {"@type": "cr:Field", "@id": "splits/url", "name": "url", "dataType": "sc:URL"},
        ],
        "data": [
            {"splits/name": s} | ({"splits/url": SPLIT_URLS[s]} if s in SPLIT_URLS else {})
            for s in splits
        ],
    }


def _patches(images: bool) -> dict[str, Any]:
    return {
        "@type": "cr:RecordSet",
        "@id": "patches",
        "name": "patches",
        "description": "One record per patch: its caption, provenance and geometry.",
        "key": {"@id": "patches/patch_id"},
        "field": [_field(f) for f in schema(images)],
    }


def _field(column: pa.Field) -> dict[str, Any]:
    kind = column.type.value_type if pa.types.is_list(column.type) else column.type
    dtype = _OVERRIDES.get(column.name) or _TYPES.get(kind)
    if dtype is None:
        raise ValueError(
            f"croissant: Parquet column {column.name!r} has type {column.type}, which has no "
            "Croissant data type here; add it to cenlib.export.croissant._TYPES"
        )
    out: dict[str, Any] = {
        "@type": "cr:Field",
        "@id": f"patches/{column.name}",
        "name": column.name,
        "description": DESCRIPTIONS.get(column.name, f"The Parquet column {column.name}."),
        "dataType": dtype,
        "source": {"fileSet": {"@id": FILESET}, "extract": {"column": column.name}},
    }
    if pa.types.is_list(column.type):
        out |= {"isArray": True, "arrayShape": _SHAPES.get(column.name, "-1")}
    if column.name == "split":
        out["references"] = {"field": {"@id": "splits/name"}}
    return out
