"""Helpers of the review tests: a small reviewed run (store, statistics, verdicts).

Importable as ``review_support`` (pytest puts this folder on the path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cenlib.verify.read import COLUMNS

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = '<img src=x onerror="alert(2)">'


def violation(kind: str, cls: str | None, text: str, words: str, reason: str) -> dict[str, Any]:
    """A violation as the verify stage writes it, its span found in ``text``."""
    start = text.index(words)
    return {
        "type": kind,
        "class": cls,
        "words": words,
        "span": [start, start + len(words)],
        "reason": reason,
    }


def verdict_rows(patch_ids: list[str]) -> list[dict[str, Any]]:
    """Verdicts of five patches: pass, failed (two violations), an XSS caption, repaired, pass."""
    p = patch_ids
    texts = [
        "Trees cover most of the image, with grass in the top left part and no snow at all.",
        "Developed area dominates the image, while water fills the bottom right part.",
        f"{XSS_SCRIPT} The image shows grass {XSS_IMG} and a little bare land in the middle.",
        "Shrubland spreads over the whole image, with trees in the top right part.",
        "Grassland fills the middle part of the image, surrounded by trees.",
    ]
    failed = [
        violation("hallucinated", "developed area", texts[1], "Developed area",
                  "developed area covers 0.0 % of the patch, yet the caption names it"),
        violation("misplaced", "water", texts[1], "water",
                  "water is not in the bottom right part (0.0 % there)"),
    ]  # fmt: skip
    statuses = ["pass", "failed", "failed", "repaired", "pass"]
    violations: list[list[dict[str, Any]]] = [[], failed, [], [], []]
    rows = []
    for i, pid in enumerate(p[:5]):
        v = violations[i]
        rows.append(
            {
                "patch_id": pid,
                "key": f"key-{i:02d}",
                "style": "chatearthnet-3.5@1",
                "status": statuses[i],
                "pass": statuses[i] != "failed",
                "score": 1.0 - 0.3 * len(v),
                "round": 1 if statuses[i] == "repaired" else 0,
                "violations": json.dumps(v),
                "caption": texts[i],
                "first_violations": json.dumps(failed[:1] if statuses[i] == "repaired" else v),
            }
        )
    return rows


def write_verdicts(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """``run_dir/verify.parquet`` with ``rows`` (the verify stage's columns)."""
    out = run_dir / "verify.parquet"
    pq.write_table(pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows]), out)
    return out


def copy_run(base: Path, out: Path) -> Path:
    """A fresh run directory sharing ``base``'s store (a symlink) and statistics."""
    out.mkdir(parents=True)
    (out / "dataset.zarr").symlink_to(base / "dataset.zarr", target_is_directory=True)
    shutil.copy(base / "analysis.parquet", out / "analysis.parquet")
    shutil.copy(base / "verify.parquet", out / "verify.parquet")
    return out
