"""The report's numbers: pure functions of the export table, the verdicts, the decisions and
the run summary (no I/O, no plotting), so that tests recompute them independently."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from cenlib.classes import CLASS_NAMES, NUM_CLASSES
from cenlib.export import SPLITS
from cenlib.review import Decision
from cenlib.verify import TYPES, Verdict, find_mentions

ALL = "all"
STAGE_ORDER = ("plan", "search", "ingest", "analyze", "prompt", "caption", "verify", "export")


def groups(table: pd.DataFrame) -> list[str]:
    """The export's splits (empty ones too), any other split names found, then ``all``."""
    present = {str(s) for s in table["split"]}
    return [*SPLITS, *sorted(present - set(SPLITS)), ALL]


def split_counts(table: pd.DataFrame) -> dict[str, int]:
    """Exported patches per split (and ``all``)."""
    counts = Counter(str(s) for s in table["split"])
    return {g: len(table) if g == ALL else counts[g] for g in groups(table)}


def fractions(table: pd.DataFrame) -> npt.NDArray[np.float64]:
    """(patches, classes) pixel shares from the ``class_fractions`` JSON of each row."""
    index = {n: i for i, n in enumerate(CLASS_NAMES)}
    out = np.zeros((len(table), NUM_CLASSES))
    for row, text in enumerate(table["class_fractions"]):
        for name, share in json.loads(text).items():
            if name not in index:
                raise ValueError(f"class_fractions names {name!r}, not a ChatEarthNet class")
            out[row, index[name]] = float(share)
    return out


@dataclass(frozen=True)
class ClassDistribution:
    """Per group (split or ``all``): the share of all pixels in each class (every patch has the
    same number of pixels, so it is the mean of the patch shares) and the fraction of patches
    that contain the class at all."""

    groups: list[str]
    patches: dict[str, int]
    share: dict[str, npt.NDArray[np.float64]]
    presence: dict[str, npt.NDArray[np.float64]]

    @property
    def nonempty(self) -> list[str]:
        """The groups with patches (an empty split has no shares to show)."""
        return [g for g in self.groups if self.patches[g]]


def class_distribution(table: pd.DataFrame) -> ClassDistribution:
    f = fractions(table)
    split = table["split"].astype(str).to_numpy()
    gs = groups(table)
    share, presence, patches = {}, {}, {}
    for g in gs:
        rows = f if g == ALL else f[split == g]
        patches[g] = len(rows)
        share[g] = rows.mean(axis=0) if len(rows) else np.zeros(NUM_CLASSES)
        presence[g] = (rows > 0).mean(axis=0) if len(rows) else np.zeros(NUM_CLASSES)
    return ClassDistribution(gs, patches, share, presence)


@dataclass(frozen=True)
class Mentions:
    """Per class (index 0..11): patches where it is present, captions that mention it
    (not negated), and the two crossed: mentioned where present, mentioned where absent."""

    patches: int
    present: npt.NDArray[np.int64]
    mentioned: npt.NDArray[np.int64]
    mentioned_present: npt.NDArray[np.int64]
    mentioned_absent: npt.NDArray[np.int64]
    negated: npt.NDArray[np.int64]  # captions saying the class is not there


def mentions(table: pd.DataFrame) -> Mentions:
    present = fractions(table) > 0
    said = np.zeros_like(present)
    negated = np.zeros_like(present)
    for row, caption in enumerate(table["caption"]):
        for m in find_mentions(str(caption)):
            (negated if m.negated else said)[row, m.cls] = True
    return Mentions(
        patches=len(table),
        present=present.sum(axis=0),
        mentioned=said.sum(axis=0),
        mentioned_present=(said & present).sum(axis=0),
        mentioned_absent=(said & ~present).sum(axis=0),
        negated=negated.sum(axis=0),
    )


@dataclass(frozen=True)
class Verification:
    """The verdicts of every caption of the run (exported or not)."""

    captions: int
    status: dict[str, int]  # pass, repaired, failed
    first: dict[str, int]  # violation type -> first captions with at least one
    final: dict[str, int]  # ... final captions with at least one
    rounds: dict[int, int]  # repair round that passed -> repaired captions

    def rate(self, which: str) -> float:
        """``first``: share of first captions that passed; ``final``: after the repairs."""
        ok = self.status.get("pass", 0) + (
            self.status.get("repaired", 0) if which == "final" else 0
        )
        return ok / self.captions if self.captions else 0.0


def verification(verdicts: Sequence[Verdict]) -> Verification:
    first: Counter[str] = Counter()
    final: Counter[str] = Counter()
    for v in verdicts:
        first.update({str(x["type"]) for x in v.first_violations})
        final.update({str(x["type"]) for x in v.violations})
    types = [*TYPES, *sorted((set(first) | set(final)) - set(TYPES))]
    status = Counter(v.status for v in verdicts)
    rounds = Counter(v.round for v in verdicts if v.status == "repaired")
    return Verification(
        captions=len(verdicts),
        status={s: status[s] for s in ("pass", "repaired", "failed")},
        first={t: first[t] for t in types},
        final={t: final[t] for t in types},
        rounds=dict(sorted(rounds.items())),
    )


@dataclass(frozen=True)
class Review:
    """Review decisions: the latest per patch by kind, and the whole history."""

    reviewed: int
    latest: dict[str, int]  # accept, reject, edit
    stale: int  # latest decisions about a caption that is no longer the patch's caption
    decisions: int
    reviewers: list[str] = field(default_factory=list)
    exported: dict[str, int] = field(default_factory=dict)  # export's review column, by value


def review(
    decisions: dict[str, Decision],
    history: Sequence[Decision],
    verdicts: Sequence[Verdict] | None,
    table: pd.DataFrame,
) -> Review:
    keys = {v.patch_id: v.key for v in verdicts or ()}
    kinds = Counter(d.decision for d in decisions.values())
    stale = sum(1 for p, d in decisions.items() if p in keys and keys[p] != d.key)
    exported = Counter(str(r) or "not reviewed" for r in table["review"])
    return Review(
        reviewed=len(decisions),
        latest={k: kinds[k] for k in ("accept", "reject", "edit")},
        stale=stale,
        decisions=len(history),
        reviewers=sorted({d.reviewer for d in history}),
        exported=dict(sorted(exported.items())),
    )


@dataclass(frozen=True)
class StageCost:
    stage: str
    seconds: float | None
    cost: float | None  # USD spent by this stage in that command (captions, repairs)
    detail: str  # what else its summary says that costs: tokens, requests, bytes


def stage_costs(summary: dict[str, Any] | None) -> list[StageCost]:
    """One row per stage that ``summary.json`` has, in the job's order."""
    if not summary:
        return []
    rows = []
    wall = summary.get("wall")
    wall = wall if isinstance(wall, dict) else {}
    for name in STAGE_ORDER:
        s = summary.get(name)
        if not isinstance(s, dict):
            continue
        # The job's own clock around the stage when it has one (plan has no other), else
        # what the stage says it took.
        seconds = wall.get(name, s.get("seconds"))
        rows.append(
            StageCost(
                stage=name,
                seconds=float(seconds) if isinstance(seconds, int | float) else None,
                cost=_cost(name, s),
                detail=_detail(name, s),
            )
        )
    return rows


def _cost(name: str, s: dict[str, Any]) -> float | None:
    if name == "caption":
        return float(s.get("cost_this_run", 0.0))
    if name == "verify":
        return float(s.get("repair_cost", 0.0))
    return None


def _detail(name: str, s: dict[str, Any]) -> str:
    if name == "caption":
        return (
            f"{s.get('answered_this_run', 0)} answers this run, {s.get('captioned', 0)} "
            f"captions; {s.get('tokens_in_total', 0):,} tokens in, "
            f"{s.get('tokens_out_total', 0):,} out; ${float(s.get('cost_total', 0.0)):.4f} "
            "in all runs"
        )
    if name == "verify":
        return f"{s.get('verified', 0)} verified, {len(s.get('rounds', []))} repair rounds"
    if name == "export":
        return f"{s.get('exported', 0)} patches, {s.get('files', 0)} files, {_mib(s)}"
    if name == "ingest":
        return f"{s.get('ok', 0)} patches ok, {s.get('failed', 0)} failed, {_mib(s)}"
    if name in ("plan", "analyze", "prompt"):
        n = s.get("patches", s.get("prompts", s.get("ok")))
        return f"{n} {'prompts' if name == 'prompt' else 'patches'}" if n is not None else ""
    if name == "search":
        return f"{s.get('searches', 0)} searches, {s.get('failed', 0)} failed"
    return ""


def _mib(s: dict[str, Any]) -> str:
    n = s.get("bytes", s.get("bytes_written", 0)) or 0
    return f"{int(n) / 2**20:.1f} MiB"
