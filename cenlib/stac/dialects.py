"""Catalogue dialects: the same Sentinel-2 product under different asset keys and conventions."""

from __future__ import annotations

from typing import Any, Literal

from cenlib.world.sentinel2 import BANDS, SCL_KEY, SCL_PC_KEY

Dialect = Literal["earth-search", "planetary-computer"]

# Common band name (Earth Search key) -> asset key, per dialect.
ASSET_KEYS: dict[Dialect, dict[str, str]] = {
    "earth-search": {b.key: b.key for b in BANDS} | {"scl": SCL_KEY},
    "planetary-computer": {b.key: b.pc_key for b in BANDS} | {"scl": SCL_PC_KEY},
}


def detect(item: dict[str, Any]) -> Dialect:
    """Which dialect an item speaks, from its asset keys."""
    return "planetary-computer" if "B04" in item.get("assets", {}) else "earth-search"


def asset_key(dialect: Dialect, band: str) -> str:
    try:
        return ASSET_KEYS[dialect][band]
    except KeyError as e:
        known = ", ".join(ASSET_KEYS[dialect])
        raise KeyError(
            f"band {band!r} has no asset in the {dialect} dialect; known: {known}"
        ) from e


def reflectance_scale_offset(item: dict[str, Any], band: str) -> tuple[float, float]:
    """(scale, offset) turning an asset's DNs into surface reflectance: refl = DN * scale + offset.

    The rule, per item, first match wins:

    1. ``earthsearch:boa_offset_applied: true``: Earth Search already removed the +1000 DN offset
       from the pixels, whatever ``raster:bands`` says (it still publishes offset -0.1, which
       gives negative reflectances: Element84/earth-search#66, #71). Scale 1e-4, offset 0.
    2. ``raster:bands`` states a scale or offset: use it.
    3. Otherwise (the Planetary Computer publishes neither) the processing baseline decides:
       from 04.00 (25 January 2022) on every DN carries +1000, so offset -0.1; before, none.

    The ingest stage guards the rule with a data check on dark pixels.
    """
    dialect = detect(item)
    props = item.get("properties", {})
    if props.get("earthsearch:boa_offset_applied") is True:
        return 0.0001, 0.0
    asset = item["assets"][asset_key(dialect, band)]
    rb = (asset.get("raster:bands") or [{}])[0]
    if "scale" in rb or "offset" in rb:
        return float(rb.get("scale", 1.0)), float(rb.get("offset", 0.0))
    baseline = str(props.get("s2:processing_baseline", "00.00"))
    return 0.0001, (-0.1 if baseline >= "04.00" else 0.0)
