"""What a prompt style needs to know about one patch, as plain counts.

The analysis stage fills a :class:`PatchContext` from its kernels; :meth:`PatchContext.from_labels`
is a plain per-patch implementation for previews and tests. Styles only read counts, so they never
depend on how (or where) the counts were computed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from cenlib.analysis import CEN_REGIONS, GRID3, region_boxes, region_counts, region_index
from cenlib.classes import CLASS_NAMES, NUM_CLASSES

# ChatEarthNet's five regions, in the order its prompts list them (the analysis's order).
REGION_NAMES: tuple[str, ...] = CEN_REGIONS
# The 3 x 3 grid of the cen-layout style, row-major; in prose the corner cells lose "corner".
GRID3_NAMES: tuple[str, ...] = tuple(name.removesuffix(" corner") for name in GRID3)
EDGES: tuple[str, ...] = ("top", "bottom", "left", "right")
Orientation = Literal["north-south", "east-west", "compact"]

# Words every style keeps out of its captions (ChatEarthNet's list): they hedge, or they talk about
# how the description was made instead of what the image shows.
BANNED_WORDS: tuple[str, ...] = (
    "possibly",
    "likely",
    "perhaps",
    "context",
    "segmentation",
    "appear",
    "change",
    "transition",
    "dynamic",
)

IntArray = npt.NDArray[np.int64]
Message = dict[str, Any]


@dataclass(frozen=True)
class ClassLayout:
    """Shape and position of one class on a patch (filled by the analysis stage).

    ``components``: connected components of the class; ``largest_share``: pixels of the largest
    component / pixels of the class (0..1); ``elongation``: major / minor axis of the largest
    component (>= 1); ``orientation``: direction of that major axis, or ``compact`` when it is not
    elongated; ``edges``: patch edges the class touches, a subset of ``EDGES``;
    ``fragmentation``: 0 (one solid block) .. 1 (isolated specks).
    """

    components: int
    largest_share: float
    elongation: float
    orientation: Orientation
    edges: tuple[str, ...]
    fragmentation: float

    def __post_init__(self) -> None:
        bad = [e for e in self.edges if e not in EDGES]
        if bad:
            raise ValueError(f"edges must be among {EDGES}; got {list(self.edges)}")
        if self.orientation not in ("north-south", "east-west", "compact"):
            raise ValueError(f"unknown orientation {self.orientation!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``edges`` as a list)."""
        d = asdict(self)
        d["edges"] = list(self.edges)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassLayout:
        """Inverse of :meth:`to_dict`."""
        return cls(
            components=int(d["components"]),
            largest_share=float(d["largest_share"]),
            elongation=float(d["elongation"]),
            orientation=d["orientation"],
            edges=tuple(d["edges"]),
            fragmentation=float(d["fragmentation"]),
        )


def _counts(a: Any, shape: tuple[int, ...], what: str) -> IntArray:
    arr = np.asarray(a)
    if arr.shape != shape:
        raise ValueError(f"PatchContext.{what} must have shape {shape}; got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"PatchContext.{what} must hold integer pixel counts; got {arr.dtype}")
    out = arr.astype(np.int64)
    if (out < 0).any():
        raise ValueError(f"PatchContext.{what} has negative counts")
    return out


@dataclass(frozen=True, eq=False)
class PatchContext:
    """Counts of one patch that the prompt styles read. Class indices are ChatEarthNet's (0..11).

    ``overall`` (12,): pixels per class over the patch. ``regions`` (5, 12): pixels per class in
    ``REGION_NAMES`` order. ``region_pixels`` (5,): pixels per region, background included.
    ``grid3`` (9, 12): pixels per class in the 3 x 3 grid, ``GRID3_NAMES`` order. ``layout``: per
    class index, its :class:`ClassLayout`. ``labels`` (h, w) uint8 class map and ``rgb`` (h, w, 3)
    uint8 true-colour image are only needed by image styles.
    """

    overall: IntArray
    regions: IntArray
    region_pixels: IntArray
    grid3: IntArray | None = None
    layout: Mapping[int, ClassLayout] | None = None
    labels: npt.NDArray[np.uint8] | None = None
    rgb: npt.NDArray[np.uint8] | None = None

    def __post_init__(self) -> None:
        # Coerce once at the boundary so that the styles can trust shapes and dtypes.
        k = NUM_CLASSES
        set_ = object.__setattr__
        set_(self, "overall", _counts(self.overall, (k,), "overall"))
        set_(self, "regions", _counts(self.regions, (len(REGION_NAMES), k), "regions"))
        set_(
            self,
            "region_pixels",
            _counts(self.region_pixels, (len(REGION_NAMES),), "region_pixels"),
        )
        if (self.regions.sum(axis=1) > self.region_pixels).any():
            raise ValueError("PatchContext.regions count more pixels than region_pixels allows")
        if self.grid3 is not None:
            set_(self, "grid3", _counts(self.grid3, (len(GRID3_NAMES), k), "grid3"))
        if self.layout is not None:
            bad = [c for c in self.layout if not 0 < int(c) < k]
            if bad:
                raise ValueError(f"PatchContext.layout keys must be class indices 1..{k - 1}")
        if self.labels is not None:
            lab = np.asarray(self.labels)
            if lab.ndim != 2 or lab.dtype != np.uint8:
                raise ValueError(
                    f"PatchContext.labels must be 2-D uint8; got {lab.dtype} {lab.shape}"
                )
            set_(self, "labels", lab)
        if self.rgb is not None:
            rgb = np.asarray(self.rgb)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"PatchContext.rgb must be (h, w, 3) uint8; got {rgb.shape}")
            set_(self, "rgb", rgb)

    @classmethod
    def from_counts(
        cls,
        counts: npt.ArrayLike,
        size: int,
        *,
        layout: Mapping[int, ClassLayout] | None = None,
        labels: npt.ArrayLike | None = None,
        rgb: npt.ArrayLike | None = None,
    ) -> PatchContext:
        """A context from one patch's ``(len(REGIONS), 12)`` counts of :mod:`cenlib.analysis`."""
        c = np.asarray(counts, dtype=np.int64)
        whole, cen, grid, pixels = _count_rows(size)
        return cls(
            overall=c[whole],
            regions=c[cen],
            region_pixels=pixels,
            grid3=c[grid],
            layout=layout,
            labels=None if labels is None else np.asarray(labels, dtype=np.uint8),
            rgb=None if rgb is None else np.asarray(rgb, dtype=np.uint8),
        )

    @classmethod
    def from_labels(
        cls,
        labels: npt.ArrayLike,
        *,
        rgb: npt.ArrayLike | None = None,
        layout: Mapping[int, ClassLayout] | None = None,
        keep_labels: bool = True,
    ) -> PatchContext:
        """The context of one ``(S, S)`` class map, counted by :func:`analysis.region_counts`."""
        lab = np.asarray(labels)
        if lab.ndim != 2 or lab.dtype != np.uint8 or lab.shape[0] != lab.shape[1]:
            raise ValueError(
                f"labels must be a square uint8 class map; got {lab.dtype} {lab.shape}"
            )
        return cls.from_counts(
            region_counts(lab[None])[0],
            lab.shape[0],
            layout=layout,
            labels=lab if keep_labels else None,
            rgb=rgb,
        )


@functools.lru_cache(maxsize=8)
def _count_rows(size: int) -> tuple[int, list[int], list[int], IntArray]:
    """Rows of the analysis counts for whole, ChatEarthNet regions and 3 x 3 grid; region sizes."""
    boxes = region_boxes(size)
    pixels = np.array(
        [(boxes[r][1] - boxes[r][0]) * (boxes[r][3] - boxes[r][2]) for r in CEN_REGIONS], np.int64
    )
    pixels.setflags(write=False)
    return region_index(("whole",))[0], region_index(CEN_REGIONS), region_index(GRID3), pixels


def patch_seed(seed: int, patch_id: str) -> int:
    """A 64-bit seed for one patch, stable across processes and Python versions.

    sha256 rather than ``hash()``: string hashing is salted per process, so it would give every
    Dask worker different nouns for the same patch.
    """
    digest = hashlib.sha256(f"{int(seed)}\x00{patch_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draws(seed: int, patch_id: str, n: int, k: int) -> list[int]:
    """`n` seeded draws from 0..k-1 (k <= 255) for one patch: sha256 blocks as the stream.

    Byte b gives ``b % k`` and bytes at or above the largest multiple of k are skipped, so
    every value is equally likely. About 30x cheaper than constructing a numpy Generator per
    patch, which was half the cost of a chatearthnet-3.5 prompt.
    """
    limit = 256 - 256 % k
    out: list[int] = []
    block = 0
    while len(out) < n:
        digest = hashlib.sha256(f"{int(seed)}\x00{patch_id}\x00{block}".encode()).digest()
        out.extend(b % k for b in digest if b < limit)
        block += 1
    return out[:n]


def class_name(index: int) -> str:
    """The ChatEarthNet name of a class index."""
    return CLASS_NAMES[index]


def ranked(counts: IntArray | list[int], minimum: int = 1) -> list[tuple[int, int]]:
    """``(class, count)`` for non-background classes with ``count >= minimum``, most first.

    Ties go to the lower class index, so equal counts always come out in the same order.
    """
    values = counts.tolist() if isinstance(counts, np.ndarray) else counts
    items = [(c, int(n)) for c, n in enumerate(values) if c > 0 and n >= minimum]
    items.sort(key=lambda cn: (-cn[1], cn[0]))
    return items


def join_words(words: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]
