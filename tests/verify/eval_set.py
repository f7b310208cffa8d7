"""The verify stage's evaluation set: land-cover maps and labelled captions.

``data/maps.npy`` holds (n, 256, 256) uint8 maps of ChatEarthNet class indices (0 background,
1 water ... 11 moss). ``data/eval.jsonl`` holds one caption per line with the violations a
correct verifier must report (``expect``). ``truth`` gives the statistics the labels were checked
against: per class, pixel counts over the whole map and per part of it.

Parts (``REGIONS``), as half-open boxes (rows, columns) of a 256 x 256 map:

- quadrants ``top left`` (north-west) ... ``bottom right``: 128 x 128 each;
- halves ``top half`` (north, upper) ... ``right half`` (east);
- ``centre``: the middle square, rows and columns 64..192;
- corners ``top left corner`` ...: the corner cells of a 3 x 3 grid (85 px);
- edges ``top edge`` ...: the outer third along that side, full length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

DATA = Path(__file__).parent / "data"

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "water",
    "developed area",
    "tree",
    "shrub",
    "grass",
    "crop",
    "bare land",
    "snow",
    "wetland",
    "mangroves",
    "moss",
)

VIOLATION_TYPES: tuple[str, ...] = (
    "hallucinated",
    "omitted",
    "misplaced",
    "amount",
    "banned",
    "truncated",
    "length",
    "language",
)

INJECTED_TYPES: tuple[str, ...] = (
    "swapped",
    "invented",
    "dropped",
    "position",
    "amount",
    "banned",
    "truncated",
)

SOURCES: tuple[str, ...] = ("gpt", "chatearthnet", "smollm2")

MIN_PIXELS = 20  # fewer pixels than this: the class is absent (from the map or from a part)
DOMINANT_SHARE = 0.30  # over this share of the non-background pixels: a dominant class


def region_boxes(size: int = 256) -> dict[str, tuple[int, int, int, int]]:
    """Every part of the map as a half-open box ``(r0, r1, c0, c1)``."""
    s, h, q, t = size, size // 2, size // 4, round(size / 3)
    return {
        "top left": (0, h, 0, h),
        "top right": (0, h, h, s),
        "bottom left": (h, s, 0, h),
        "bottom right": (h, s, h, s),
        "top half": (0, h, 0, s),
        "bottom half": (h, s, 0, s),
        "left half": (0, s, 0, h),
        "right half": (0, s, h, s),
        "centre": (q, s - q, q, s - q),
        "top left corner": (0, t, 0, t),
        "top right corner": (0, t, s - t, s),
        "bottom left corner": (s - t, s, 0, t),
        "bottom right corner": (s - t, s, s - t, s),
        "top edge": (0, t, 0, s),
        "bottom edge": (s - t, s, 0, s),
        "left edge": (0, s, 0, t),
        "right edge": (0, s, s - t, s),
    }


REGIONS: tuple[str, ...] = tuple(region_boxes())


def load_maps() -> npt.NDArray[np.uint8]:
    """The (n, 256, 256) uint8 land-cover maps."""
    maps: npt.NDArray[np.uint8] = np.load(DATA / "maps.npy")
    return maps


def load_eval() -> list[dict[str, Any]]:
    """The labelled captions, in file order (``of`` refers to these positions)."""
    with open(DATA / "eval.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def truth(labels: npt.NDArray[np.uint8]) -> dict[str, dict[str, Any]]:
    """Per class name (background excluded): what the map holds of it.

    ``pixels``: pixel count; ``share``: share of the non-background pixels; ``regions``: pixel
    count per part (``REGIONS``); ``region_share``: share of that part's non-background pixels;
    ``dominant``: the largest class, or over 30 % of the non-background pixels.
    """
    labels = np.asarray(labels)
    boxes = region_boxes(labels.shape[0])
    total = int(np.count_nonzero(labels))
    counts = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES))
    per_region: dict[str, npt.NDArray[np.int64]] = {}
    for name, (r0, r1, c0, c1) in boxes.items():
        per_region[name] = np.bincount(labels[r0:r1, c0:c1].ravel(), minlength=len(CLASS_NAMES))
    largest = int(np.argmax(counts[1:])) + 1 if total else -1
    out: dict[str, dict[str, Any]] = {}
    for idx, name in enumerate(CLASS_NAMES):
        if idx == 0:
            continue
        share = float(counts[idx]) / total if total else 0.0
        region_share = {}
        for r, c in per_region.items():
            valid = int(c[1:].sum())
            region_share[r] = float(c[idx]) / valid if valid else 0.0
        out[name] = {
            "pixels": int(counts[idx]),
            "share": share,
            "regions": {r: int(c[idx]) for r, c in per_region.items()},
            "region_share": region_share,
            "dominant": bool(counts[idx] > 0 and (idx == largest or share > DOMINANT_SHARE)),
        }
    return out
