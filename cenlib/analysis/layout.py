"""Layout descriptors per patch and class: where a class lies and what shape it takes.

Components and shapes are measured on a coarse *presence grid*: the patch split into blocks of
``factor x factor`` pixels (default 4: 64 x 64 blocks of about 40 m for a 256-pixel patch), a
class present in a block when any of its pixels is. This keeps one-pixel rivers connected and
costs a sixteenth of a full-resolution labelling (about 11 labellings of 65,536 pixels per patch
otherwise). Edge contact is measured at full resolution.

:func:`layout` returns an ``(n, 12)`` structured array of ``LAYOUT_DTYPE``, one record per patch
and class index (class 0, background, only gets ``edges``):

====================  =======  ===============================================================
field                 dtype    meaning
====================  =======  ===============================================================
components            int32    4-connected components of the class on the presence grid
largest_share         float32  blocks of its largest component / blocks of the class (0..1;
                               1 = one piece, small = scattered)
largest_patch_share   float32  blocks of its largest component / blocks of the patch (0..1)
elongation            float32  major / minor axis of the largest component from its second
                               moments, blocks counted as unit squares (>= 1; a band of w x L
                               blocks gives L / w; NaN when absent)
orientation           float32  direction of that major axis in degrees clockwise from north
                               (up), in [0, 180): 0 north-south, 90 east-west, 45
                               northeast-southwest, 135 northwest-southeast (NaN when absent)
edges                 uint8    patch edges the class touches, a bit mask over ``EDGES``:
                               top 1, bottom 2, left 4, right 8 (full resolution)
fragmentation         float32  block sides facing other blocks without the class / (4 x blocks):
                               0 one solid block .. 1 isolated specks (NaN when absent); the
                               patch border is not counted
====================  =======  ===============================================================

:func:`class_layout` turns one record into a JSON-able dict with names (``orientation`` as
``north-south`` / ``east-west`` / ``compact``, ``orientation_deg`` the angle, ``edges`` as names).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from cenlib.classes import CLASS_NAMES, NUM_CLASSES

EDGES: tuple[str, ...] = ("top", "bottom", "left", "right")
LAYOUT_DTYPE = np.dtype(
    [
        ("components", np.int32),
        ("largest_share", np.float32),
        ("largest_patch_share", np.float32),
        ("elongation", np.float32),
        ("orientation", np.float32),
        ("edges", np.uint8),
        ("fragmentation", np.float32),
    ]
)
LAYOUT_FIELDS: tuple[str, ...] = tuple(LAYOUT_DTYPE.names or ())
MIN_ELONGATION = 2.0  # major / minor axis from which a shape has a direction
_CHUNK = 64  # patches per labelling call: bounds the uint16 and int32 work arrays
# 4-connectivity inside each patch, none across the patch axis of the batch.
_STRUCTURE = np.zeros((3, 3, 3), bool)
_STRUCTURE[1] = ndimage.generate_binary_structure(2, 1)
# A block is a unit square: its own second moment adds 1/12 along each axis, so a single block
# (or a one-block-wide line) gets a finite elongation.
_CELL_VARIANCE = 1 / 12


def _presence(labels: npt.NDArray[np.uint8], factor: int) -> npt.NDArray[np.uint16]:
    """(n, S/f, S/f) bit masks of the classes present in each block, and nothing else."""
    bits = np.left_shift(np.uint16(1), labels, dtype=np.uint16)
    n, size = labels.shape[0], labels.shape[1]
    s = size // factor
    if factor == 1:
        return bits
    rows: npt.NDArray[np.uint16] = np.bitwise_or.reduce(bits.reshape(n, s, factor, size), axis=2)
    cols = rows.reshape(n, s, s, factor)
    out = cols[..., 0].copy()
    for j in range(1, factor):
        out |= cols[..., j]
    return out


def _edges(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(n, 12) bit mask over ``EDGES`` of the patch edges each class touches."""
    sides = (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1])
    out = np.zeros((len(labels), NUM_CLASSES), np.uint8)
    k = np.arange(NUM_CLASSES, dtype=np.uint16)
    for e, side in enumerate(sides):
        present = np.bitwise_or.reduce(np.left_shift(np.uint16(1), side, dtype=np.uint16), axis=1)
        out |= (((present[:, None] >> k) & 1) << e).astype(np.uint8)
    return out


def _shapes(mask: npt.NDArray[np.bool_], out: npt.NDArray[Any]) -> None:
    """Fill ``out`` ((m,) records) from an (m, s, s) stack of presence masks, one per item.

    An item is one (patch, class) pair; stacking them makes one labelling call per chunk.
    """
    m, s = mask.shape[0], mask.shape[1]
    comp_map, nc = ndimage.label(mask, structure=_STRUCTURE, output=np.intp)
    flat = comp_map.reshape(m, -1)
    # scipy numbers components by their first pixel in raster order, so item i owns the ids
    # top[i-1] + 1 .. top[i] (each item has at least one). Checked below through the areas.
    top = flat.max(axis=1)
    counts = np.diff(top, prepend=0)
    area = np.bincount(flat.reshape(-1), minlength=nc + 1)[1:]
    class_area = np.count_nonzero(mask.reshape(m, -1), axis=1)
    starts = top - counts
    if (counts < 1).any() or not np.array_equal(np.add.reduceat(area, starts), class_area):
        raise RuntimeError("scipy.ndimage.label did not number components in raster order")
    item = np.repeat(np.arange(m), counts)
    # The largest component of each item; ties go to the first in reading order.
    order = np.lexsort((np.arange(nc), -area, item))
    big = order[starts] + 1
    blob = (flat == big[:, None]).reshape(m, s, s).astype(np.float32)
    coord = np.arange(s, dtype=np.float64)
    # float32 is exact here (integers <= s * s); the moments themselves are summed in float64.
    per_row = (blob @ np.stack([np.ones(s), coord], axis=1).astype(np.float32)).astype(float)
    rows, x_of_rows = per_row[..., 0], per_row[..., 1]
    cols = blob.sum(axis=1, dtype=np.float64)
    a = rows.sum(axis=1)
    my, mx = rows @ coord / a, cols @ coord / a
    cyy = rows @ coord**2 / a - my * my + _CELL_VARIANCE
    cxx = cols @ coord**2 / a - mx * mx + _CELL_VARIANCE
    cxy = x_of_rows @ coord / a - mx * my
    half = np.hypot((cxx - cyy) / 2, cxy)
    major, minor = (cxx + cyy) / 2 + half, (cxx + cyy) / 2 - half
    # Major axis at theta from east, rows growing southwards; its bearing from north, mod 180.
    theta = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    bearing = np.round(np.degrees(np.arctan2(np.cos(theta), -np.sin(theta))), 6) % 180.0
    # Sides between a block with the class and one without, inside the patch.
    sides = np.count_nonzero(mask[:, 1:, :] != mask[:, :-1, :], axis=(1, 2)) + np.count_nonzero(
        mask[:, :, 1:] != mask[:, :, :-1], axis=(1, 2)
    )
    out["components"] = counts
    out["largest_share"] = a / class_area
    out["largest_patch_share"] = a / (s * s)
    out["elongation"] = np.sqrt(major / np.maximum(minor, _CELL_VARIANCE))
    out["orientation"] = bearing
    out["fragmentation"] = sides / (4 * class_area)


def layout(labels: npt.ArrayLike, factor: int = 4) -> npt.NDArray[Any]:
    """Layout descriptors of ``(n, S, S)`` uint8 class maps: ``(n, 12)`` of ``LAYOUT_DTYPE``.

    ``factor``: block size of the presence grid (must divide S). See the module docstring for
    the fields. Deterministic: ties between equal components go to the first in reading order.
    """
    arr = np.asarray(labels)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.dtype != np.uint8:
        raise ValueError(f"labels must be (n, S, S) uint8 class maps; got {arr.dtype} {arr.shape}")
    if factor < 1 or arr.shape[1] % factor:
        raise ValueError(f"factor must divide the patch size {arr.shape[1]}; got {factor}")
    if arr.size and int(arr.max()) >= NUM_CLASSES:
        raise ValueError(f"labels hold class indices >= {NUM_CLASSES}")
    out = np.zeros((len(arr), NUM_CLASSES), LAYOUT_DTYPE)
    for name in ("elongation", "orientation", "fragmentation"):
        out[name] = np.nan
    for start in range(0, len(arr), _CHUNK):
        y = arr[start : start + _CHUNK]
        rec = out[start : start + len(y)]
        rec["edges"] = _edges(y)
        present = _presence(y, factor)
        # One item per (patch, class) present: on real data most classes are missing from
        # most patches, and none of them costs anything then.
        held = np.bitwise_or.reduce(present.reshape(len(y), -1), axis=1)
        p, k = np.nonzero((held[:, None] >> np.arange(NUM_CLASSES, dtype=np.uint16)) & 1)
        p, k = p[k > 0], k[k > 0]
        if len(p):
            bit = np.left_shift(np.uint16(1), k.astype(np.uint16))
            mask = np.bitwise_and(present[p], bit[:, None, None]) != 0
            items = np.zeros(len(p), LAYOUT_DTYPE)
            _shapes(mask, items)
            for name in LAYOUT_FIELDS:
                if name != "edges":
                    rec[name][p, k] = items[name]
    return out


def orientation_name(degrees: float, elongation: float, diagonals: bool = False) -> str:
    """``compact`` under ``MIN_ELONGATION`` (or NaN), else the axis: ``north-south`` or
    ``east-west`` (the nearer of the two; with ``diagonals``, also ``northeast-southwest`` and
    ``northwest-southeast``)."""
    if not elongation >= MIN_ELONGATION or math.isnan(degrees):
        return "compact"
    if diagonals:
        names = ("north-south", "northeast-southwest", "east-west", "northwest-southeast")
        return names[int(((degrees + 22.5) % 180) // 45)]
    return "east-west" if 45 <= degrees < 135 else "north-south"


def edge_names(mask: int) -> tuple[str, ...]:
    """Names of the edges in an ``edges`` bit mask, in ``EDGES`` order."""
    return tuple(e for i, e in enumerate(EDGES) if int(mask) >> i & 1)


def _num(v: Any) -> float | None:
    f = float(v)
    return None if math.isnan(f) else round(f, 4)


def class_layout(rec: Any) -> dict[str, Any]:
    """One record of :func:`layout` as a JSON-able dict (NaN as None, names for codes)."""
    return {
        "components": int(rec["components"]),
        "largest_share": _num(rec["largest_share"]),
        "largest_patch_share": _num(rec["largest_patch_share"]),
        "elongation": _num(rec["elongation"]),
        "orientation": orientation_name(float(rec["orientation"]), float(rec["elongation"])),
        "orientation_deg": _num(rec["orientation"]),
        "edges": list(edge_names(int(rec["edges"]))),
        "fragmentation": _num(rec["fragmentation"]),
    }


def patch_layout(records: npt.NDArray[Any]) -> dict[str, dict[str, Any]]:
    """A patch's ``(12,)`` records as ``{class name: class_layout}`` for the classes present."""
    return {
        CLASS_NAMES[k]: class_layout(records[k])
        for k in range(1, NUM_CLASSES)
        if records[k]["components"] > 0
    }
