"""What a report is made from: the files the earlier stages wrote, read through their readers.

The export's table (:func:`cenlib.export.read_table`) is required; the verdicts, the review
decisions and the run summary are optional (a run exported without review has no
``review.sqlite``; ``summary.json``, the latest record of each stage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cenlib.errors import CenError
from cenlib.export import ExportReadError, export_root, read_table
from cenlib.review import Decision, decision_history, read_decisions
from cenlib.verify import Verdict, VerdictsError, read_verdicts

SUMMARY = "summary.json"


class ReportError(CenError, FileNotFoundError):
    """The run directory has nothing to report on yet; says which command makes it."""


@dataclass(frozen=True)
class RunInputs:
    """Everything one report shows, as read from one run directory."""

    run_dir: Path
    export_root: Path
    table: pd.DataFrame  # one row per exported patch (the export's Parquet parts)
    verdicts: list[Verdict] | None  # every caption's verdict; None without verify.parquet
    decisions: dict[str, Decision] = field(default_factory=dict)  # latest per patch
    history: list[Decision] = field(default_factory=list)  # every decision, in order
    summary: dict[str, Any] | None = None  # summary.json; None when absent or unreadable


def read_inputs(run_dir: Path) -> RunInputs:
    """Read a run directory's outputs; :class:`ReportError` when it has no export."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(
            f"{run_dir} is not a run directory; give the `output:` directory of a run "
            "(`cen run CONFIG` makes one)"
        )
    try:
        table = read_table(run_dir)
    except ExportReadError as e:
        elsewhere = _exported_to(run_dir)
        if elsewhere is not None:
            raise ReportError(
                f"the run in {run_dir} exported to {elsewhere} (export.output), and the report "
                f"reads the export under {export_root(run_dir)} only; export there too (leave "
                "export.output unset) or copy the export into it"
            ) from e
        raise ReportError(
            f"no exported dataset in {run_dir} ({export_root(run_dir)} has no Parquet parts); "
            "run `cen export CONFIG` (or `cen run CONFIG`) for that run first"
        ) from e
    if table.empty:
        raise ReportError(
            f"the export of {run_dir} has no patches; nothing passed verification or review "
            "(see verify_report.json), so there is nothing to report"
        )
    try:
        verdicts: list[Verdict] | None = list(read_verdicts(run_dir))
    except VerdictsError:
        verdicts = None
    return RunInputs(
        run_dir=run_dir,
        export_root=export_root(run_dir),
        table=table,
        verdicts=verdicts,
        decisions=read_decisions(run_dir),
        history=decision_history(run_dir),
        summary=_summary(run_dir / SUMMARY),
    )


def _exported_to(run_dir: Path) -> str | None:
    """Where summary.json says the export went, when that is not the run's own directory."""
    export = (_summary(run_dir / SUMMARY) or {}).get("export")
    where = export.get("directory") if isinstance(export, dict) else None
    if not isinstance(where, str) or Path(where).resolve() == export_root(run_dir).resolve():
        return None
    return where


def _summary(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
