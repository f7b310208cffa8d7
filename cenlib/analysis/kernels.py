"""Class counts per region of a batch of class maps: pure, vectorised kernels.

A batch is an ``(n, S, S)`` uint8 array of ChatEarthNet class indices (0..11, 0 = background),
``S`` even (ChatEarthNet: 256). Regions are half-open pixel boxes ``[r0, r1) x [c0, c1)``, row 0
at the top (north), column 0 at the left (west); for ``S = 256``:

==================  =================  ==============================================
region              rows x cols        meaning
==================  =================  ==============================================
whole               0..255 x 0..255    the patch
top left ...        0..127 x 0..127    ChatEarthNet's four quadrants (split at S/2)
middle              64..191 x 64..191  ChatEarthNet's middle: [S//4, S - S//4)
top, bottom, ...    see below          cells of the 3 x 3 grid
==================  =================  ==============================================

The 3 x 3 grid splits both axes at ``t = round(S / 3)`` and ``S - t``: 0..84, 85..170, 171..255
for 256 (85, 86, 85 pixels), symmetric so that a left-right flip maps ``left`` onto ``right``.
Its cells are named ``top``, ``bottom``, ``left``, ``right`` (the edge-centre cells),
``centre``, and the four corners ``top left corner`` ... ``bottom right corner`` (the
quadrant names are taken by ChatEarthNet's regions).

:func:`region_counts` counts every class in every region in one pass over the pixels. The fast
route (``S`` a multiple of 64, little-endian) packs the four bit planes of the labels with
``np.packbits`` (1 bit per pixel, 64 pixels per word), forms the products of bit planes that
the 12 classes need (7 ANDs on packed words), counts set bits per word and row with
``np.bitwise_count``, sums rows into bands with one float32 matrix product (exact: the
integers stay far below 2**24), and recovers per-class counts from the plane products by
inclusion-exclusion. Columns cut inside a word are handled by masked copies of that word. The
labels are read once from memory; everything after the packing works on 1/8 of the bytes.
Any other ``S`` takes a plain ``np.bincount`` route with the same results.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from cenlib.classes import NUM_CLASSES

REGIONS: tuple[str, ...] = (
    "whole",
    "top left",
    "top right",
    "bottom left",
    "bottom right",
    "middle",
    "top",
    "bottom",
    "left",
    "right",
    "centre",
    "top left corner",
    "top right corner",
    "bottom left corner",
    "bottom right corner",
)
CEN_REGIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "middle")
# Row-major 3 x 3 grid, for styles that walk the grid in reading order.
GRID3: tuple[str, ...] = (
    "top left corner",
    "top",
    "top right corner",
    "left",
    "centre",
    "right",
    "bottom left corner",
    "bottom",
    "bottom right corner",
)

Labels = npt.NDArray[np.uint8]
Counts = npt.NDArray[np.int32]
Box = tuple[int, int, int, int]  # r0, r1, c0, c1: half-open

_CHUNK = 8  # patches per inner step: a chunk's labels and work arrays stay in L2 (~2 MiB)
_WORD = 64
# Products of bit planes (bit masks of the 4 planes of a label < 16). Planes first, then each
# product after the two it is made of. Products with both bit 2 and bit 3 set stand for labels
# 12..15, which do not occur, so they are left out (their counts are 0).
_SUBSETS: tuple[int, ...] = (1, 2, 4, 8, 3, 5, 9, 6, 10, 7, 11)


def _bits(x: int) -> int:
    return bin(x).count("1")


def _mobius() -> npt.NDArray[np.float64]:
    """(12, 1 + len(_SUBSETS)): class count = sum over plane products containing its bits.

    Pixels with exactly bit pattern k = sum over T >= k of (-1)**|T - k| * (pixels with all of
    T's bits set); column 0 is the empty product (all pixels of the region).
    """
    family = (0, *_SUBSETS)
    m = np.zeros((NUM_CLASSES, len(family)))
    for k in range(NUM_CLASSES):
        for j, t in enumerate(family):
            if t & k == k:
                m[k, j] = (-1) ** (_bits(t) - _bits(k))
    return m


_MOBIUS = _mobius()


def region_boxes(size: int) -> dict[str, Box]:
    """Every region of ``REGIONS`` as a half-open box ``(r0, r1, c0, c1)`` for patch size S."""
    if size < 2 or size % 2:
        raise ValueError(f"patch size must be even and >= 2; got {size}")
    s, h, q, t = size, size // 2, size // 4, round(size / 3)
    g = ((0, t), (t, s - t), (s - t, s))  # 3 x 3 bands

    def cell(i: int, j: int) -> Box:
        return (*g[i], *g[j])

    boxes: dict[str, Box] = {
        "whole": (0, s, 0, s),
        "top left": (0, h, 0, h),
        "top right": (0, h, h, s),
        "bottom left": (h, s, 0, h),
        "bottom right": (h, s, h, s),
        "middle": (q, s - q, q, s - q),
        "top": cell(0, 1),
        "bottom": cell(2, 1),
        "left": cell(1, 0),
        "right": cell(1, 2),
        "centre": cell(1, 1),
        "top left corner": cell(0, 0),
        "top right corner": cell(0, 2),
        "bottom left corner": cell(2, 0),
        "bottom right corner": cell(2, 2),
    }
    assert tuple(boxes) == REGIONS
    return boxes


@dataclass(frozen=True)
class _Geometry:
    size: int
    cuts: tuple[int, ...]  # band edges shared by rows and columns, 0 and S included
    member: npt.NDArray[np.float64]  # (R, B, B): 1 where band cell (a, b) lies in region r
    areas: npt.NDArray[np.float64]  # (R,) pixels per region


@lru_cache(maxsize=8)
def _geometry(size: int) -> _Geometry:
    boxes = region_boxes(size)
    cuts = tuple(sorted({v for box in boxes.values() for v in box}))
    pos = {c: i for i, c in enumerate(cuts)}
    nb = len(cuts) - 1
    member = np.zeros((len(REGIONS), nb, nb))
    for r, (r0, r1, c0, c1) in enumerate(boxes.values()):
        member[r, pos[r0] : pos[r1], pos[c0] : pos[c1]] = 1
    areas = np.array([(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes.values()], float)
    return _Geometry(size, cuts, member, areas)


@dataclass(frozen=True)
class _Packed:
    """Constants of the bit-packed route for one patch size."""

    words: int  # 64-pixel words per row
    partial_words: npt.NDArray[np.intp]  # per column cut inside a word: that word
    partial_masks: npt.NDArray[np.uint64]  # (P, 1): the word's bits left of the cut
    rows: npt.NDArray[np.float32]  # (S, B): 1 where row y lies in band b
    fold: npt.NDArray[np.float64]  # (F * B, R): (feature, row band) -> region


@lru_cache(maxsize=8)
def _packed(size: int) -> _Packed:
    geo = _geometry(size)
    words = size // _WORD
    inner = [c for c in geo.cuts if c % _WORD]
    partial_words = np.array([c // _WORD for c in inner], np.intp)
    partial_masks = np.array([[(1 << (c % _WORD)) - 1] for c in inner], np.uint64).reshape(-1, 1)
    nf, nb = words + len(inner), len(geo.cuts) - 1

    def prefix(c: int) -> npt.NDArray[np.float64]:
        """Features summing to the pixels of columns [0, c) (full words, then one partial)."""
        v = np.zeros(nf)
        v[: c // _WORD] = 1
        if c % _WORD:
            v[words + inner.index(c)] = 1
        return v

    bands = list(itertools.pairwise(geo.cuts))
    cols = np.stack([prefix(b) - prefix(a) for a, b in bands], axis=1)
    rows = np.zeros((size, nb), np.float32)
    for i, (a, b) in enumerate(bands):
        rows[a:b, i] = 1
    # region r gets feature f of row band a through every column band b of r on that row band
    fold = np.einsum("fb,rab->far", cols, geo.member).reshape(nf * nb, len(REGIONS))
    return _Packed(words, partial_words, partial_masks, rows, fold)


def _check(labels: npt.ArrayLike) -> Labels:
    arr = np.asarray(labels)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"labels must be (n, S, S) class maps; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 class indices; got {arr.dtype}")
    region_boxes(arr.shape[1])  # validates S
    return arr


def _too_big(y: Labels) -> None:
    hi = int(y.max(initial=0))
    if hi >= NUM_CLASSES:
        raise ValueError(f"labels hold class index {hi}; ChatEarthNet has 0..{NUM_CLASSES - 1}")


def _counts_packed(labels: Labels) -> Counts:
    n, size = labels.shape[0], labels.shape[1]
    geo, pk = _geometry(size), _packed(size)
    w, ns = pk.words, len(_SUBSETS)
    nf, nb = w + len(pk.partial_words), len(geo.cuts) - 1
    c = min(_CHUNK, n)
    buf = np.empty((c, size, size), np.uint8)
    # (product, patch, feature, row): features are the row's words then its masked partial words;
    # row-last keeps every operation below on long contiguous runs.
    x = np.empty((ns, c, nf, size), np.uint64)
    bands = np.empty((ns, n, nf, nb), np.float32)
    index = {t: i for i, t in enumerate(_SUBSETS)}
    for s in range(0, n, c):
        y = np.ascontiguousarray(labels[s : s + c])
        m = len(y)
        _too_big(y)
        for bit in range(4):
            plane = x[index[1 << bit], :m]
            np.bitwise_and(y, np.uint8(1 << bit), out=buf[:m])
            packed = np.packbits(buf[:m].reshape(-1), bitorder="little")
            plane[:, :w] = packed.view(np.uint64).reshape(m, size, w).transpose(0, 2, 1)
        if len(pk.partial_words):
            planes = x[:4, :m]
            cut = np.take(planes, pk.partial_words, axis=2)
            np.bitwise_and(cut, pk.partial_masks, out=planes[:, :, w:])
        for t in _SUBSETS[4:]:
            low = t & -t
            np.bitwise_and(x[index[t ^ low], :m], x[index[low], :m], out=x[index[t], :m])
        ones = np.bitwise_count(x[:, :m]).astype(np.float32).reshape(-1, size)
        bands[:, s : s + m] = (ones @ pk.rows).reshape(ns, m, nf, nb)
    per_product = bands.reshape(ns * n, nf * nb).astype(np.float64) @ pk.fold
    family = np.concatenate(
        [np.broadcast_to(geo.areas, (1, n, len(REGIONS))), per_product.reshape(ns, n, -1)]
    )
    counts = np.tensordot(_MOBIUS, family, axes=(1, 0))  # (class, patch, region)
    return np.rint(counts).astype(np.int32).transpose(1, 2, 0).copy()


def _counts_bincount(labels: Labels) -> Counts:
    n, size = labels.shape[0], labels.shape[1]
    geo = _geometry(size)
    nb = len(geo.cuts) - 1
    band = np.searchsorted(np.array(geo.cuts[1:]), np.arange(size), side="right")
    cell = (band[:, None] * nb + band[None, :]) * NUM_CLASSES
    per_cell = nb * nb * NUM_CLASSES
    out = np.empty((n, len(REGIONS), NUM_CLASSES), np.int32)
    for s in range(0, n, _CHUNK):
        y = labels[s : s + _CHUNK]
        m = len(y)
        _too_big(y)
        key = (cell + y) + (np.arange(m) * per_cell)[:, None, None]
        hist = np.bincount(key.reshape(-1), minlength=m * per_cell).reshape(m, nb * nb, -1)
        out[s : s + m] = np.einsum("rc,mck->mrk", geo.member.reshape(len(REGIONS), -1), hist)
    return out


def region_counts(labels: npt.ArrayLike) -> Counts:
    """Pixels per class in every region of ``REGIONS``: ``(n, len(REGIONS), 12)`` int32.

    ``labels``: ``(n, S, S)`` uint8 class maps, S even. Raises ``ValueError`` on another shape or
    dtype, or on a class index >= 12. Counts of each region sum to its area.
    """
    arr = _check(labels)
    if len(arr) == 0:
        return np.zeros((0, len(REGIONS), NUM_CLASSES), np.int32)
    if arr.shape[1] % _WORD == 0 and sys.byteorder == "little":
        return _counts_packed(arr)
    return _counts_bincount(arr)


def region_counts_bincount(labels: npt.ArrayLike) -> Counts:
    """:func:`region_counts` by the plain ``np.bincount`` route (any S); for checks."""
    arr = _check(labels)
    if len(arr) == 0:
        return np.zeros((0, len(REGIONS), NUM_CLASSES), np.int32)
    return _counts_bincount(arr)


def fractions(counts: npt.ArrayLike, *, background: bool = False) -> npt.NDArray[np.float64]:
    """Shares of each class per region, same shape as ``counts`` (``(..., 12)``), float64.

    By default over non-background pixels (ChatEarthNet's proportions): class 0 gets 0 and the
    other classes sum to 1. With ``background=True``, over all pixels of the region (class 0
    included). A region without any such pixel gets 0 everywhere, never NaN.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.shape[-1] != NUM_CLASSES:
        raise ValueError(f"counts must end with {NUM_CLASSES} classes; got shape {c.shape}")
    if not background:
        c = c.copy()
        c[..., 0] = 0
    total = c.sum(axis=-1, keepdims=True)
    out = np.zeros_like(c)
    np.divide(c, total, out=out, where=total > 0)
    return out


def region_index(names: tuple[str, ...]) -> list[int]:
    """Positions of region names in ``REGIONS`` (e.g. of ``CEN_REGIONS``), in the order given."""
    unknown = [r for r in names if r not in REGIONS]
    if unknown:
        raise KeyError(f"unknown regions {unknown}; known: {', '.join(REGIONS)}")
    return [REGIONS.index(r) for r in names]
