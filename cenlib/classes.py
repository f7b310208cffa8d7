"""ESA WorldCover codes and the 12 ChatEarthNet land-cover classes.

ChatEarthNet describes each patch with 11 land-cover classes plus a background class (index 0)
for pixels WorldCover leaves empty. The table below is the single source of truth for codes,
indices, names and colours; every stage imports it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class LandCoverClass:
    index: int  # ChatEarthNet class index
    name: str  # name as ChatEarthNet's prompts spell it
    worldcover_code: int  # ESA WorldCover v200 map value
    worldcover_name: str  # ESA's own legend text
    color: str  # hex RGB, ESA's colour hint


CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass(0, "background", 0, "No data", "000000"),
    LandCoverClass(1, "water", 80, "Permanent water bodies", "0064C8"),
    LandCoverClass(2, "developed area", 50, "Built-up", "FA0000"),
    LandCoverClass(3, "tree", 10, "Tree cover", "006400"),
    LandCoverClass(4, "shrub", 20, "Shrubland", "FFBB22"),
    LandCoverClass(5, "grass", 30, "Grassland", "FFFF4C"),
    LandCoverClass(6, "crop", 40, "Cropland", "F096FF"),
    LandCoverClass(7, "bare land", 60, "Bare / sparse vegetation", "B4B4B4"),
    LandCoverClass(8, "snow", 70, "Snow and ice", "F0F0F0"),
    LandCoverClass(9, "wetland", 90, "Herbaceous wetland", "0096A0"),
    LandCoverClass(10, "mangroves", 95, "Mangroves", "00CF75"),
    LandCoverClass(11, "moss", 100, "Moss and lichen", "FAE6A0"),
)

NUM_CLASSES = len(CLASSES)
WORLDCOVER_NODATA = 0
WORLDCOVER_CODES: tuple[int, ...] = tuple(c.worldcover_code for c in CLASSES[1:])
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

# Lookup table: WorldCover code (0..255) -> ChatEarthNet index. Unknown codes map to background.
_CODE_TO_INDEX = np.zeros(256, dtype=np.uint8)
for _c in CLASSES:
    _CODE_TO_INDEX[_c.worldcover_code] = _c.index


def worldcover_to_index(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Map an array of WorldCover codes to ChatEarthNet class indices (pure kernel)."""
    return _CODE_TO_INDEX[np.asarray(codes, dtype=np.uint8)]


def index_to_worldcover(indices: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Map ChatEarthNet class indices back to WorldCover codes (pure kernel)."""
    table = np.array([c.worldcover_code for c in CLASSES], dtype=np.uint8)
    return table[np.asarray(indices, dtype=np.uint8)]


def by_name(name: str) -> LandCoverClass:
    """Look a class up by its ChatEarthNet name."""
    for c in CLASSES:
        if c.name == name:
            return c
    raise KeyError(f"unknown land-cover class {name!r}; known: {', '.join(CLASS_NAMES)}")


def palette_rgb() -> npt.NDArray[np.uint8]:
    """(12, 3) uint8 colours indexed by ChatEarthNet class index."""
    return np.array([[int(c.color[i : i + 2], 16) for i in (0, 2, 4)] for c in CLASSES], np.uint8)
