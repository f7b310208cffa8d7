"""STAC items and collections shaped like the real catalogues' records.

- Earth Search v1 ``sentinel-2-l2a``: asset keys blue..swir22/scl, ``raster:bands`` with
  scale 0.0001 / offset -0.1, ``proj:epsg`` in properties, ``mgrs:*``.
- Planetary Computer ``sentinel-2-l2a``: asset keys B02..B12/SCL, no ``raster:bands``,
  ``proj:bbox`` on assets, ``s2:mgrs_tile``.
- Planetary Computer ``esa-worldcover``: asset ``map`` with ``classification:classes``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cenlib.classes import CLASSES
from cenlib.world.sentinel2 import BANDS, SCL_KEY, SCL_PC_KEY, Band
from cenlib.world.tiling import S2Tile, worldcover_tile_origin

Json = dict[str, Any]
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
EXT = "https://stac-extensions.github.io/{}/schema.json"
ES_EXTENSIONS = [
    EXT.format(e)
    for e in (
        "raster/v1.1.0",
        "mgrs/v1.0.0",
        "grid/v1.0.0",
        "projection/v1.1.0",
        "eo/v1.1.0",
        "view/v1.0.0",
    )
]
PC_EXTENSIONS = [EXT.format(e) for e in ("eo/v1.0.0", "sat/v1.0.0", "projection/v1.0.0")]
WC_EXTENSIONS = [
    EXT.format(e)
    for e in ("projection/v1.1.0", "grid/v1.1.0", "raster/v1.1.0", "classification/v1.0.0")
]


@dataclass(frozen=True)
class Scene:
    """Everything the item builders need to know about one synthetic Sentinel-2 acquisition."""

    tile: S2Tile
    when: dt.datetime
    platform: str  # "sentinel-2a" / "sentinel-2b"
    baseline: str  # processing baseline, e.g. "05.00"
    relative_orbit: int
    geometry: Json
    bbox: list[float]
    stats: dict[str, float]  # s2:*_percentage values and eo:cloud_cover
    # Earth Search harmonised some scenes by removing the +1000 DN offset from the pixels while
    # still publishing raster:bands offset -0.1; the world has scenes of both kinds.
    offset_applied: bool = False

    @property
    def sat(self) -> str:
        return "S2A" if self.platform.endswith("a") else "S2B"

    @property
    def es_id(self) -> str:
        return f"{self.sat}_{self.tile.id}_{self.when:%Y%m%d}_0_L2A"

    @property
    def pc_id(self) -> str:
        gen = self.when + dt.timedelta(hours=9, minutes=17)
        return (
            f"{self.sat}_MSIL2A_{self.when:%Y%m%dT%H%M%S}_R{self.relative_orbit:03d}"
            f"_T{self.tile.id}_{gen:%Y%m%dT%H%M%S}"
        )

    @property
    def product_uri(self) -> str:
        gen = self.when + dt.timedelta(hours=9, minutes=17)
        return (
            f"{self.sat}_MSIL2A_{self.when:%Y%m%dT%H%M%S}_N{self.baseline.replace('.', '')}"
            f"_R{self.relative_orbit:03d}_T{self.tile.id}_{gen:%Y%m%dT%H%M%S}.SAFE"
        )

    def file_name(self, band_key: str) -> str:
        """Asset file name, as Earth Search names its COGs (B02.tif ... SCL.tif)."""
        if band_key == SCL_KEY:
            return "SCL.tif"
        return next(b.pc_key for b in BANDS if b.key == band_key) + ".tif"


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _grid(tile: S2Tile, res: int) -> Json:
    shape = list(tile.shape(res))
    t = tile.transform(res)
    return {"proj:shape": shape, "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f]}


def _feature(
    item_id: str,
    cid: str,
    extensions: list[str],
    geometry: Json,
    bbox: list[float],
    props: Json,
    assets: Json,
) -> Json:
    """A STAC item as stored on disk: its collection link is relative to the item file."""
    link = {
        "rel": "collection",
        "href": f"../../collections/{cid}.json",
        "type": "application/json",
    }
    return {
        "type": "Feature", "stac_version": "1.0.0", "stac_extensions": extensions, "id": item_id,
        "collection": cid, "geometry": geometry, "bbox": bbox, "properties": props,
        "assets": assets, "links": [link],
    }  # fmt: skip


def _eo_band(name: str, b: Band) -> Json:
    return {
        "name": name, "common_name": b.common_name, "description": b.description,
        "center_wavelength": b.center, "full_width_half_max": b.fwhm,
    }  # fmt: skip


def earth_search_item(s: Scene, hrefs: dict[str, str]) -> Json:
    """An Earth Search v1 ``sentinel-2-l2a`` item; `hrefs` maps asset key -> href."""
    assets: Json = {}
    for b in BANDS:
        assets[b.key] = {
            "href": hrefs[b.key],
            "type": COG,
            "title": f"{b.description} - {b.res}m",
            "eo:bands": [_eo_band(b.key, b)],
            "gsd": b.res,
            **_grid(s.tile, b.res),
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": b.res,
                    "scale": 0.0001,
                    "offset": -0.1,
                }
            ],
            "roles": ["data", "reflectance"],
        }
    assets[SCL_KEY] = {
        "href": hrefs[SCL_KEY],
        "type": COG,
        "title": "Scene classification map (SCL)",
        **_grid(s.tile, 20),
        "gsd": 20,
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        "roles": ["data", "reflectance"],
    }
    t = s.tile
    props: Json = {
        "created": _iso(s.when + dt.timedelta(hours=11)),
        "platform": s.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": s.stats["eo:cloud_cover"],
        "proj:epsg": t.epsg,
        "mgrs:utm_zone": t.zone,
        "mgrs:latitude_band": t.latitude_band,
        "mgrs:grid_square": t.grid_square,
        "grid:code": f"MGRS-{t.id}",
        **{k: v for k, v in s.stats.items() if k.startswith("s2:")},
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": s.baseline,
        "s2:product_uri": s.product_uri,
        "datetime": _iso(s.when),
        "s2:sequence": "0",
        "earthsearch:boa_offset_applied": s.offset_applied,
        "updated": _iso(s.when + dt.timedelta(hours=11)),
    }
    return _feature(s.es_id, "sentinel-2-l2a", ES_EXTENSIONS, s.geometry, s.bbox, props, assets)


def planetary_computer_item(s: Scene, hrefs: dict[str, str]) -> Json:
    """A Planetary Computer ``sentinel-2-l2a`` item; `hrefs` maps Earth Search key -> href."""
    t = s.tile
    assets: Json = {}
    for b in BANDS:
        assets[b.pc_key] = {
            "href": hrefs[b.key],
            "type": COG,
            "title": f"Band {b.pc_key[1:].lstrip('0')} - {b.description} - {b.res}m",
            "gsd": b.res,
            "eo:bands": [_eo_band(b.pc_key, b)],
            "proj:bbox": list(t.bounds),
            **_grid(t, b.res),
            "roles": ["data"],
        }
    assets[SCL_PC_KEY] = {
        "href": hrefs[SCL_KEY],
        "type": COG,
        "title": "Scene classfication map (SCL)",
        "gsd": 20.0,
        "proj:bbox": list(t.bounds),
        **_grid(t, 20),
        "roles": ["data"],
    }
    props: Json = {
        "datetime": _iso(s.when),
        "platform": "Sentinel-2A" if s.sat == "S2A" else "Sentinel-2B",
        "proj:epsg": t.epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": t.id,
        "constellation": "Sentinel 2",
        "eo:cloud_cover": s.stats["eo:cloud_cover"],
        "s2:product_uri": s.product_uri,
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "sat:relative_orbit": s.relative_orbit,
        "s2:processing_baseline": s.baseline,
        **{k: v for k, v in s.stats.items() if k.startswith("s2:")},
    }
    return _feature(s.pc_id, "sentinel-2-l2a", PC_EXTENSIONS, s.geometry, s.bbox, props, assets)


def worldcover_item(name: str, href: str, geometry: Json, bbox: list[float]) -> Json:
    """A Planetary Computer ``esa-worldcover`` item for the v200 (2021) tile `name`."""
    lon0, lat0 = worldcover_tile_origin(name)
    item_id = f"ESA_WorldCover_10m_2021_v200_{name}"
    classes = [
        {"value": c.worldcover_code, "description": c.worldcover_name, "color-hint": c.color}
        for c in CLASSES[1:]
    ]
    props: Json = {
        "esa_worldcover:product_version": "2.0.0",
        "esa_worldcover:product_tile": name,
        "start_datetime": "2021-01-01T00:00:00Z",
        "end_datetime": "2021-12-31T23:59:59Z",
        "description": "ESA WorldCover product at 10m resolution",
        "mission": "sentinel-1, sentinel-2",
        "platform": "sentinel-1a, sentinel-1b, sentinel-2a, sentinel-2b",
        "instruments": ["c-sar", "msi"],
        "proj:epsg": 4326,
        "grid:code": f"ESAWORLDCOVER-{name}",
        "datetime": None,
    }
    band = {
        "name": "Band1", "description": "Classification values", "nodata": 0,
        "sampling": "area", "data_type": "uint8", "spatial_resolution": 10,
    }  # fmt: skip
    asset = {
        "href": href, "type": COG, "title": "Land Cover Classes", "raster:bands": [band],
        "classification:classes": classes,
        "proj:transform": [1 / 12000, 0.0, float(lon0), 0.0, -1 / 12000, float(lat0 + 3)],
        "proj:shape": [36000, 36000], "roles": ["data"],
    }  # fmt: skip
    return _feature(item_id, "esa-worldcover", WC_EXTENSIONS, geometry, bbox, props, {"map": asset})


def collection(cid: str, description: str, items: list[Json], extensions: list[str]) -> Json:
    """A collection whose extent covers `items`."""
    bboxes = [i["bbox"] for i in items] or [[-180.0, -90.0, 180.0, 90.0]]
    times = sorted(
        i["properties"].get("datetime") or i["properties"]["start_datetime"] for i in items
    ) or [None]
    ends = sorted(i["properties"].get("datetime") or i["properties"]["end_datetime"] for i in items)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": extensions,
        "id": cid,
        "description": description,
        "license": "proprietary" if "sentinel" in cid else "CC-BY-4.0",
        "extent": {
            "spatial": {
                "bbox": [
                    [
                        min(b[0] for b in bboxes),
                        min(b[1] for b in bboxes),
                        max(b[2] for b in bboxes),
                        max(b[3] for b in bboxes),
                    ]
                ]
            },
            "temporal": {"interval": [[times[0], ends[-1] if ends else None]]},
        },
        "links": [],
    }
