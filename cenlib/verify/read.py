"""Reading what the verify stage wrote: ``verify.parquet``, one :class:`Verdict` per patch.

Light on purpose (pyarrow and json only): the review app and the export read verdicts with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from cenlib.errors import CenError

VERDICTS = "verify.parquet"
Status = Literal["pass", "repaired", "failed"]
COLUMNS = (
    "patch_id",
    "key",
    "style",
    "status",
    "pass",
    "score",
    "round",
    "violations",
    "caption",
    "first_violations",
)


class VerdictsError(CenError, ValueError):
    """``verify.parquet`` is missing or is not a verdicts table; says how to rebuild it."""


@dataclass(frozen=True)
class Verdict:
    """One patch's verdict on its final caption.

    ``status``: ``pass`` (the first caption passed), ``repaired`` (a repair of round ``round``
    passed) or ``failed`` (still failing after the last round: it goes to review). ``key``: the
    request key of the final caption's answer. ``violations``: those of the final caption, each
    ``{"type", "class", "words", "span": [start, end], "reason"}`` (``class`` is ``None`` for
    types about the whole text); ``first_violations``: those of the first caption.
    """

    patch_id: str
    key: str
    style: str
    status: Status
    passed: bool
    score: float
    round: int
    caption: str
    violations: list[dict[str, Any]] = field(default_factory=list)
    first_violations: list[dict[str, Any]] = field(default_factory=list)


def verdicts_file(path: Path | str) -> Path:
    """``path`` itself, or ``path/verify.parquet`` when ``path`` is a run directory."""
    p = Path(path)
    return p / VERDICTS if p.is_dir() else p


def read_verdicts(run_dir: Path | str) -> Iterator[Verdict]:
    """Every verdict of a run (its directory, or the ``verify.parquet`` file), in caption order."""
    path = verdicts_file(run_dir)
    if not path.is_file():
        raise VerdictsError(f"no verdicts at {path}; run `cen verify CONFIG` first")
    f = pq.ParquetFile(path)
    missing = [c for c in COLUMNS if c not in f.schema_arrow.names]
    if missing:
        raise VerdictsError(
            f"{path} lacks columns {missing}: it was not written by this cenlib's verify stage; "
            "run `cen verify CONFIG` again"
        )
    for batch in f.iter_batches(columns=list(COLUMNS)):
        d = batch.to_pydict()
        for i in range(batch.num_rows):
            yield Verdict(
                patch_id=d["patch_id"][i],
                key=d["key"][i],
                style=d["style"][i],
                status=d["status"][i],
                passed=bool(d["pass"][i]),
                score=float(d["score"][i]),
                round=int(d["round"][i]),
                caption=d["caption"][i],
                violations=json.loads(d["violations"][i]),
                first_violations=json.loads(d["first_violations"][i]),
            )
