"""What the review page shows of a run: its captions with their verdicts, statistics, images.

:class:`ReviewRun` reads the run once (verdicts, or captions when the run was not verified yet;
the statistics table; the store's patch index) and then answers the page's questions about one
patch. Images are read from the store on demand and kept in a small cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cenlib.analysis import CEN_REGIONS, read_statistics
from cenlib.captions import read_captions
from cenlib.classes import CLASSES, NUM_CLASSES
from cenlib.config import ConfigError, load_config
from cenlib.errors import CenError
from cenlib.ingest import array, open_group
from cenlib.review.caption import class_index, segments
from cenlib.review.images import land_cover_png, rgb_png
from cenlib.verify import VERDICTS, find_mentions, read_verdicts

UNVERIFIED = "unverified"  # status of a caption of a run that has no verify.parquet yet
IMAGE_CACHE = 128  # PNGs kept in memory (two per patch)
SHOWN_REGIONS = ("whole", *CEN_REGIONS)  # the statistics table: the whole patch, its 5 regions


class ReviewRunError(CenError, ValueError):
    """The run directory lacks what review needs; the message says which stage to run."""


class UnknownPatch(CenError, KeyError):
    """No caption of that patch id in this run."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Item:
    """One patch under review: its final caption and verdict."""

    patch_id: str
    key: str
    style: str
    status: str
    score: float
    round: int
    caption: str
    violations: list[dict[str, Any]] = field(default_factory=list)
    first_violations: list[dict[str, Any]] = field(default_factory=list)


def store_path(run_dir: Path) -> str:
    """Where the run's store is: ``ingest.store`` of the run's ``config.yaml`` if it names one,
    else ``dataset.zarr`` in the run directory (where the job writes it by default)."""
    cfg_file = run_dir / "config.yaml"
    if cfg_file.is_file():
        try:
            store = load_config(cfg_file).ingest.store
        except ConfigError:
            store = None  # a config of another version: the default place is still right
        if store:
            return store
    return str(run_dir / "dataset.zarr")


def load_items(run_dir: Path) -> list[Item]:
    """The verdicts of the run, in caption order; the raw captions if it was not verified."""
    if (run_dir / VERDICTS).is_file():
        return [
            Item(
                v.patch_id,
                v.key,
                v.style,
                v.status,
                v.score,
                v.round,
                v.caption,
                list(v.violations),
                list(v.first_violations),
            )
            for v in read_verdicts(run_dir)
        ]
    try:
        captions = list(read_captions(run_dir))
    except CenError as e:
        raise ReviewRunError(
            f"nothing to review in {run_dir}: no {VERDICTS} and no captions ({e})"
        ) from e
    return [Item(c.patch_id, c.key, c.style, UNVERIFIED, 0.0, 0, c.caption) for c in captions]


class ReviewRun:
    """A run directory, read for review. Thread-safe: the server calls it from many threads."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise ReviewRunError(f"no run directory at {self.run_dir}; pass a run's output dir")
        self.items = load_items(self.run_dir)
        self.by_id = {it.patch_id: it for it in self.items}
        self.stats = self._statistics()
        self.url = store_path(self.run_dir)
        try:
            self.group = open_group(self.url)
            ids = [str(i) for i in np.asarray(array(self.group, "patch_id")[:])]
            self.bands = [str(b) for b in np.asarray(array(self.group, "band")[:])]
        except (CenError, FileNotFoundError) as e:
            raise ReviewRunError(
                f"no readable store at {self.url} ({e}); run `cen ingest CONFIG` first"
            ) from e
        self.position = {pid: i for i, pid in enumerate(ids)}
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _statistics(self) -> dict[str, dict[str, Any]]:
        try:
            table = read_statistics(self.run_dir)
        except FileNotFoundError:
            return {}  # shown as "no statistics" on the page
        names = [c.name.replace(" ", "_") for c in CLASSES]
        cols = set(table.column_names)
        out: dict[str, dict[str, Any]] = {}
        data = table.to_pydict()
        for row, pid in enumerate(data["patch_id"]):
            per: dict[str, list[float]] = {}
            for region in SHOWN_REGIONS:
                slug = region.replace(" ", "_")
                per[region] = [
                    float(data[c][row] or 0.0) if (c := f"frac_{slug}_{n}") in cols else 0.0
                    for n in names[1:]
                ]
            bg = f"count_whole_{names[0]}"
            counts = [data[f"count_whole_{n}"][row] for n in names if f"count_whole_{n}" in cols]
            total = sum(int(c or 0) for c in counts)
            no_data = int(data[bg][row] or 0) / total if bg in cols and total else 0.0
            out[str(pid)] = {"regions": per, "no_data": no_data}
        return out

    def item(self, patch_id: str) -> Item:
        try:
            return self.by_id[patch_id]
        except KeyError as e:
            raise UnknownPatch(f"no caption of patch {patch_id!r} in {self.run_dir}") from e

    def classes_of(self, it: Item) -> list[int]:
        """Classes present in the patch's map, and those its violations name."""
        whole = self.stats.get(it.patch_id, {}).get("regions", {}).get("whole", [])
        present = {k + 1 for k, f in enumerate(whole) if f > 0}
        named = {class_index(v.get("class")) for v in it.violations}
        return sorted(k for k in present | named if k)

    def summary(self, it: Item) -> dict[str, Any]:
        """The patch's entry in the list the page filters."""
        return {
            "id": it.patch_id,
            "key": it.key,
            "status": it.status,
            "types": sorted({str(v.get("type")) for v in it.violations}),
            "classes": self.classes_of(it),
        }

    def detail(self, it: Item) -> dict[str, Any]:
        """Everything the page shows of one patch (decisions excepted)."""
        violations = [
            {**v, "class": class_index(v.get("class")), "words": str(v.get("words") or "")}
            for v in it.violations
        ]
        return {
            "id": it.patch_id,
            "key": it.key,
            "style": it.style,
            "status": it.status,
            "score": it.score,
            "round": it.round,
            "caption": it.caption,
            "segments": segments(it.caption, find_mentions(it.caption), it.violations),
            "violations": violations,
            "first_violations": len(it.first_violations),
            "stats": self._stats_rows(it.patch_id),
            "in_store": it.patch_id in self.position,
        }

    def _stats_rows(self, patch_id: str) -> dict[str, Any] | None:
        s = self.stats.get(patch_id)
        if s is None:
            return None
        regions = s["regions"]
        shares = {k: [regions[r][k - 1] for r in SHOWN_REGIONS] for k in range(1, NUM_CLASSES)}
        present = sorted((k for k, v in shares.items() if any(v)), key=lambda k: -shares[k][0])
        rows = [{"cls": k, "shares": shares[k]} for k in present]
        return {"regions": list(SHOWN_REGIONS), "rows": rows, "no_data": s["no_data"]}

    def image(self, patch_id: str, kind: str) -> bytes:
        """PNG of the patch: ``rgb`` (true colour) or ``land-cover``."""
        self.item(patch_id)  # only patches under review
        if kind not in ("rgb", "land-cover"):
            raise UnknownPatch(f"no image {kind!r}; expected rgb or land-cover")
        with self._lock:
            hit = self._cache.get((patch_id, kind))
            if hit is not None:
                self._cache.move_to_end((patch_id, kind))
                return hit
        p = self.position.get(patch_id)
        if p is None:
            raise UnknownPatch(
                f"patch {patch_id!r} is captioned but not in the store {self.url}; was the "
                "store rebuilt after captioning? run `cen run CONFIG` again"
            )
        if kind == "rgb":
            png = rgb_png(np.asarray(array(self.group, "reflectance")[p]), self.bands)
        else:
            png = land_cover_png(np.asarray(array(self.group, "land_cover")[p]))
        with self._lock:
            self._cache[(patch_id, kind)] = png
            while len(self._cache) > IMAGE_CACHE:
                self._cache.popitem(last=False)
        return png
