"""The report's entry: read a run's outputs, compute the statistics, draw, write one page.

Reads metadata (:func:`.inputs.read_inputs`) -> numbers (:mod:`.stats`, :mod:`.text`) ->
figures and sections (:mod:`.sections`) -> ``report.html`` written atomically. Same run, same
bytes: nothing on the page depends on the clock or on the machine.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from cenlib.io import write_text_atomic
from cenlib.report import sections
from cenlib.report.inputs import ReportError, read_inputs
from cenlib.report.page import document
from cenlib.report.read import REPORT
from cenlib.summary import Summary

__all__ = ["REPORT", "ReportError", "ReportSummary", "run_report"]


@dataclasses.dataclass(frozen=True)
class ReportSummary(Summary):
    """What :func:`run_report` wrote."""

    path: str
    bytes: int
    patches: int
    splits: dict[str, int]
    figures: int
    sections: list[str]
    seconds: float

    def line(self) -> str:
        splits = ", ".join(f"{n} {s}" for s, n in self.splits.items())
        return (
            f"report: {self.patches} patches ({splits}), {self.figures} figures, "
            f"{self.bytes / 1024:.0f} KiB in {self.seconds} s -> {self.path}"
        )


def run_report(run_dir: Path, output: Path | None = None) -> ReportSummary:
    """Write the HTML report of the run in ``run_dir`` (to ``output``, default
    ``<run>/report.html``); :class:`ReportError` when the run has no export yet."""
    from cenlib.report import stats, text

    t0 = time.perf_counter()
    run = read_inputs(Path(run_dir))
    words = text.text_stats([str(c) for c in run.table["caption"]])
    dist = stats.class_distribution(run.table)
    verdicts = stats.verification(run.verdicts) if run.verdicts is not None else None
    parts = [
        sections.overview(run, words, verdicts),
        sections.sample_map(run),
        sections.land_cover(dist),
        sections.captions(run, words),
        sections.mentions(stats.mentions(run.table)),
        sections.verification(verdicts),
        sections.review(stats.review(run.decisions, run.history, run.verdicts, run.table)),
        sections.stages(stats.stage_costs(run.summary), _total(run.summary)),
    ]
    name = str((run.summary or {}).get("name") or run.run_dir.name)
    page = document(
        f"Dataset report: {name}",
        sections.frame(run.table),
        parts,
        f"Made by `cen report {run.run_dir}` from the run's export, verdicts, review decisions "
        "and summary.json. Self-contained: the figures are inside this file.",
    )
    out = Path(output) if output is not None else run.run_dir / REPORT
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, page)
    counts = stats.split_counts(run.table)
    return ReportSummary(
        path=str(out),
        bytes=out.stat().st_size,
        patches=counts.pop(stats.ALL),
        splits=counts,
        figures=page.count("<img "),
        sections=[s.id for s in parts],
        seconds=round(time.perf_counter() - t0, 2),
    )


def _total(summary: dict[str, object] | None) -> float | None:
    seconds = (summary or {}).get("seconds")
    return float(seconds) if isinstance(seconds, int | float) else None
