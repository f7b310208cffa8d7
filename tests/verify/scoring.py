"""Scoring the verifier on the evaluation set (``data/``): detection per injected error type,
false alarms on clean captions, and a confusion table per violation type. Shared by
``test_accuracy.py`` and ``benchmarks/bench_verify.py``."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cenlib.analysis import region_counts
from cenlib.prompts import BANNED_WORDS
from cenlib.verify import TYPES, Rules, check


@dataclass
class Scores:
    caught: Counter[str] = field(default_factory=Counter)  # injected type -> caught
    injected: Counter[str] = field(default_factory=Counter)  # injected type -> copies
    clean: Counter[str] = field(default_factory=Counter)  # source -> clean captions
    false_alarms: Counter[str] = field(default_factory=Counter)  # source -> flagged clean ones
    confusion: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    labelled: Counter[str] = field(default_factory=Counter)  # source -> hand-labelled lines
    labelled_agree: Counter[str] = field(default_factory=Counter)  # every labelled type found
    misses: list[dict[str, Any]] = field(default_factory=list)
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)

    def detection(self, kind: str) -> float:
        return self.caught[kind] / self.injected[kind] if self.injected[kind] else float("nan")

    def false_alarm_rate(self, source: str | None = None) -> float:
        n = self.clean[source] if source else sum(self.clean.values())
        k = self.false_alarms[source] if source else sum(self.false_alarms.values())
        return k / n if n else float("nan")


def rules() -> Rules:
    return Rules(banned=BANNED_WORDS)


def _pairs(violations: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
    return {(v["type"], v["class"]) for v in violations}


def _hit(expected: dict[str, Any], found: set[tuple[str, str | None]]) -> bool:
    if expected.get("class") is None:
        return any(t == expected["type"] for t, _ in found)
    return (expected["type"], expected["class"]) in found


def score_eval(maps: np.ndarray, lines: list[dict[str, Any]]) -> Scores:
    """Run the verifier on every line of the evaluation set and score it."""
    counts = region_counts(maps)
    r = rules()
    s = Scores()
    for n, line in enumerate(lines):
        found_list = check(line["caption"], counts[line["index"]], r)
        found = _pairs(found_list)
        expected = line["expect"]
        for t in TYPES:
            want = any(e["type"] == t for e in expected)
            got = any(f == t for f, _ in found)
            s.confusion[t]["tp" if want and got else "fn" if want else "fp" if got else "tn"] += 1
        kind = line.get("injected")
        if kind:
            s.injected[kind] += 1
            # Caught: the caption fails and the error put in is among what is reported.
            if found and any(_hit(e, found) for e in expected):
                s.caught[kind] += 1
            else:
                s.misses.append({"line": n, **line, "found": found_list})
        elif not expected:
            s.clean[line["source"]] += 1
            if found:
                s.false_alarms[line["source"]] += 1
                s.alarms.append({"line": n, **line, "found": found_list})
        else:  # labelled by hand (real SmolLM2 answers, length and language examples)
            s.labelled[line["source"]] += 1
            if {e["type"] for e in expected} <= {f for f, _ in found}:
                s.labelled_agree[line["source"]] += 1
            else:
                s.disagreements.append({"line": n, **line, "found": found_list})
    return s


def table(s: Scores) -> str:
    """The figures as Markdown tables."""
    rows = ["| injected error | copies | caught | detection |", "| --- | --- | --- | --- |"]
    for kind in sorted(s.injected):
        rows.append(f"| {kind} | {s.injected[kind]} | {s.caught[kind]} | {s.detection(kind):.1%} |")
    rows += ["", "| clean captions | n | flagged | false alarms |", "| --- | --- | --- | --- |"]
    for src in sorted(s.clean):
        rows.append(
            f"| {src} | {s.clean[src]} | {s.false_alarms[src]} | {s.false_alarm_rate(src):.1%} |"
        )
    rows += ["", "| hand-labelled | n | every labelled type found |", "| --- | --- | --- |"]
    for src in sorted(s.labelled):
        rows.append(f"| {src} | {s.labelled[src]} | {s.labelled_agree[src]} |")
    rows += ["", "| violation type | TP | FN | FP | TN |", "| --- | --- | --- | --- | --- |"]
    for t in TYPES:
        c = s.confusion[t]
        rows.append(f"| {t} | {c['tp']} | {c['fn']} | {c['fp']} | {c['tn']} |")
    return "\n".join(rows)
