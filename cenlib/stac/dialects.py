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
    except KeyError:
        known = ", ".join(ASSET_KEYS[dialect])
        raise KeyError(
            f"band {band!r} has no asset in the {dialect} dialect; known: {known}"
        ) from None


def reflectance_scale_offset(item: dict[str, Any], band: str) -> tuple[float, float]:
    """(scale, offset) turning an asset's DNs into surface reflectance.

    Earth Search states them in ``raster:bands``; the Planetary Computer does not, so they follow
    from ``s2:processing_baseline``: from 04.00 on, every DN carries a +1000 offset.
    """
    dialect = detect(item)
    asset = item["assets"][asset_key(dialect, band)]
    rb = (asset.get("raster:bands") or [{}])[0]
    if "scale" in rb or "offset" in rb:
        return float(rb.get("scale", 1.0)), float(rb.get("offset", 0.0))
    baseline = str(item.get("properties", {}).get("s2:processing_baseline", "00.00"))
    return 0.0001, (-0.1 if baseline >= "04.00" else 0.0)
