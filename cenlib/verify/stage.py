"""The verify stage: every caption checked against its patch's land cover; repairs; verdicts.

``run_verify`` reads ``captions.jsonl`` and, from the run's store, the analysis's region counts
(never the prompt text: a caption is checked against the land cover, not against what the model
was told). Captions go to Dask tasks in batches of ``verify.batch_size`` (``verify-NNNNN-token``,
in ``span("verify")``); each task reads the counts of its patches and runs :func:`checks.check`.
Failed captions go back to the caption pool for up to ``verify.repair_rounds`` rounds (see
:mod:`.repair`), each answer verified again. Writes:

- ``verify.parquet``: one row per caption (:func:`~cenlib.verify.read.read_verdicts`);
- ``verify_report.json``: the :class:`VerifySummary`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client, span

from cenlib.analysis import read_region_counts
from cenlib.captions import (
    CAPTIONS,
    Caption,
    caption_lines,
    read_captions_at,
    read_responses,
    run_captions,
)
from cenlib.config import CaptionConfig, RunConfig, VerifyConfig
from cenlib.errors import CenError
from cenlib.ingest import array, open_group, store_url
from cenlib.io import file_digest, stable_hash, write_atomic
from cenlib.prompts import PROMPTS, get_style
from cenlib.summary import Summary
from cenlib.verify.checks import TYPES, Rules, Violation, check, score
from cenlib.verify.read import VERDICTS
from cenlib.verify.repair import correction, write_repair_prompts

REPORT = "verify_report.json"
REPAIR_DIR = "verify"

Row = tuple[int, int, str | None]  # store index, byte offset in captions.jsonl, finish_reason


class VerifyError(CenError, RuntimeError):
    """The verify stage cannot start; the message says what to fix."""


@dataclass(frozen=True)
class VerifySummary(Summary):
    """What a verify run found; ``verify_report.json`` is its :meth:`as_dict`."""

    verified: int
    passed: int  # first captions that passed
    repaired: int
    failed: int  # still failing: to review
    no_statistics: int  # captions of patches the store has no counts for (failed)
    pass_rate_first: float
    pass_rate_final: float
    violations_first: dict[str, int]  # captions with at least one violation of each type
    violations_final: dict[str, int]
    rounds: list[dict[str, Any]]  # per repair round: sent, passed, cost
    repair_cost: float
    files: dict[str, str]
    seconds: float

    def line(self) -> str:
        return (
            f"verify: {self.verified} captions checked: {self.passed} passed, "
            f"{self.repaired} repaired, {self.failed} to review "
            f"({self.pass_rate_first:.0%} -> {self.pass_rate_final:.0%} passing) -> "
            f"{self.files['verdicts']}"
        )


def rules_for(style: str, cfg: VerifyConfig) -> Rules:
    """What a caption of ``style`` (``name`` or ``name@version``) is held to."""
    try:
        st = get_style(style.partition("@")[0])
    except KeyError as e:
        raise VerifyError(
            f"captions of style {style!r}: no such prompt style, so nothing to verify them by"
        ) from e
    lo, hi = st.caption_words
    return Rules(
        banned=st.banned,
        numbers=st.numbers_allowed,
        min_words=cfg.min_words or lo,
        max_words=cfg.max_words or hi,
        min_pixels=cfg.min_pixels,
        dominant_share=cfg.dominant_share,
        dominance_share=cfg.dominance_share,
        small_share=cfg.small_share,
    )


def _region_counts(g: Any, rows: Sequence[int]) -> np.ndarray[Any, np.dtype[np.int32]]:
    """``(len(rows), regions, classes)`` counts of store rows: one slice over their span, or row
    by row when they are scattered over much more than their number."""
    idx = np.asarray(rows, dtype=np.int64)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    if hi - lo <= 4 * len(idx) + 256:
        return read_region_counts(g, lo, hi)[idx - lo]
    return np.stack([read_region_counts(g, int(i), int(i) + 1)[0] for i in idx])


def verify_batch(
    url: str, captions: str, rows: Sequence[Row], rules: dict[str, Rules]
) -> list[list[Violation]]:  # fmt: skip
    """The violations of each caption of ``rows`` (a Dask task): reads its captions from the
    file ``captions`` at their offsets and the region counts of their patches from the store at
    ``url`` (one slice over the rows' span)."""
    counts = _region_counts(open_group(url), [r[0] for r in rows])
    caps = read_captions_at(captions, [r[1] for r in rows])
    return [
        check(c.caption, counts[k], rules[c.style], finish)
        for k, (c, (_, _, finish)) in enumerate(zip(caps, rows, strict=True))
    ]


def _verify(
    client: Client, url: str, captions: Path, rows: list[Row], rules: dict[str, Rules], batch: int
) -> list[list[Violation]]:
    """Violations of every row, from one Dask task per ``batch`` rows. Keys hash the captions
    file's content, the rows and the rules: the same inputs give the same keys."""
    token = stable_hash(file_digest(captions), rows, sorted(rules))[:8]
    parts = [rows[s : s + batch] for s in range(0, len(rows), batch)]
    futures = [
        client.submit(verify_batch, url, str(captions), part, rules, key=f"verify-{i:05d}-{token}")
        for i, part in enumerate(parts)
    ]
    out: list[list[Violation]] = []
    for fut in futures:
        out.extend(fut.result())
    return out


def _finish_reasons(out: Path) -> dict[str, str | None]:
    merged = out / "responses.jsonl"
    if not merged.is_file():
        return {}
    return {r.key: r.finish_reason for r in read_responses(merged) if r.finish_reason}


@dataclass
class _State:
    caption: Caption
    offset: int  # of its line in captions.jsonl
    index: int | None  # store row of the patch
    first: list[Violation]
    last: list[Violation]
    text: str
    key: str
    round: int = 0


def run_verify(
    cfg: RunConfig,
    client: Client,
    *,
    caption: CaptionConfig | None = None,
    max_cost: float | None = None,
    on_round: Callable[[int, int], None] | None = None,
) -> VerifySummary:
    """Verify every caption of the run; repair through the pool; write the verdicts.

    ``caption``: the pool for repairs (default ``cfg.caption``; the job passes the one with its
    local SmolLM2 served); ``max_cost`` overrides ``caption.max_cost`` for the run directory as a
    whole (captions and repairs); ``on_round(round, captions)`` is called as each repair round
    starts.
    """
    t0 = time.perf_counter()
    out = cfg.output
    pool = caption or cfg.caption
    if not (out / CAPTIONS).is_file():
        raise VerifyError(f"no captions at {out / CAPTIONS}; run `cen caption CONFIG` first")
    url = store_url(cfg)
    try:
        ids = [str(x) for x in np.asarray(array(open_group(url), "patch_id")[:])]
    except Exception as e:
        raise VerifyError(f"cannot read the store at {url} ({e}); run `cen ingest CONFIG`") from e
    where = {pid: i for i, pid in enumerate(ids)}
    finish = _finish_reasons(out)
    lines = list(caption_lines(out))
    rules = {c.style: rules_for(c.style, cfg.verify) for _, c in lines}
    states = [_State(c, off, where.get(c.patch_id), [], [], c.caption, c.key) for off, c in lines]
    no_stats = _no_statistics(states)
    known = [s for s in states if s.index is not None]
    with span("verify"):
        found = _verify(
            client,
            url,
            out / CAPTIONS,
            [(s.index or 0, s.offset, finish.get(s.key)) for s in known],
            rules,
            cfg.verify.batch_size,
        )
        for s, v in zip(known, found, strict=True):
            s.first = s.last = v
        rounds = _repair(cfg, client, pool, url, known, rules, max_cost, on_round)
    summary = _summary(out, states, no_stats, rounds, t0)
    _write(out, states)
    (out / REPORT).write_text(json.dumps(summary.as_dict(), indent=1) + "\n", encoding="utf-8")
    return summary


def _no_statistics(states: list[_State]) -> int:
    n = 0
    for s in states:
        if s.index is None:
            n += 1
            s.first = s.last = [
                {
                    "type": "unverifiable",
                    "class": None,
                    "words": "",
                    "span": [0, 0],
                    "reason": f"patch {s.caption.patch_id} is not in the store: nothing to "
                    "check it against; run `cen ingest` and `cen analyze` for it",
                }
            ]
    return n


def _spent(out: Path) -> float:
    merged = out / "responses.jsonl"
    if not merged.is_file():
        return 0.0
    return float(sum(r.cost or 0.0 for r in read_responses(merged)))


def _repair(
    cfg: RunConfig,
    client: Client,
    pool: CaptionConfig,
    url: str,
    states: list[_State],
    rules: dict[str, Rules],
    max_cost: float | None,
    on_round: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    """Up to ``verify.repair_rounds`` rounds of follow-ups for the captions that fail."""
    out = cfg.output
    limit = max_cost if max_cost is not None else pool.max_cost
    rounds: list[dict[str, Any]] = []
    for r in range(1, cfg.verify.repair_rounds + 1):
        failing = [s for s in states if s.last]
        if not failing:
            break
        if on_round is not None:
            on_round(r, len(failing))
        counts = _region_counts(open_group(url), [s.index or 0 for s in failing])
        asks = {
            s.caption.patch_id: (s.text, correction(s.last, counts[k], rules[s.caption.style]))
            for k, s in enumerate(failing)
        }
        rdir = out / REPAIR_DIR / f"repair-{r}"
        sent = write_repair_prompts(out / PROMPTS, rdir, asks)
        if not sent:
            break
        others = _spent(out) + sum(_spent(out / REPAIR_DIR / f"repair-{k}") for k in range(1, r))
        budget = None if limit is None else max(0.0, limit - others)
        cap = run_captions(pool, rdir, client, max_cost=budget)
        got = {c.patch_id: (off, c) for off, c in caption_lines(rdir)}
        finish = _finish_reasons(rdir)
        todo = [s for s in failing if s.caption.patch_id in got]
        rows = [
            (s.index or 0, got[s.caption.patch_id][0], finish.get(got[s.caption.patch_id][1].key))
            for s in todo
        ]
        found = _verify(client, url, rdir / CAPTIONS, rows, rules, cfg.verify.batch_size)
        passed = 0
        for s, v in zip(todo, found, strict=True):
            c = got[s.caption.patch_id][1]
            s.text, s.key, s.last, s.round = c.caption, c.key, v, r
            passed += not v
        rounds.append(
            {
                "round": r,
                "sent": sent,
                "answered": len(todo),
                "passed": passed,
                "cost": cap.cost_total,
                "dead_letters": cap.dead_letters,
                "skipped": cap.skipped,
                "dir": str(rdir),
            }
        )
    return rounds


def _status(s: _State) -> str:
    if not s.first:
        return "pass"
    return "failed" if s.last else "repaired"


def _write(out: Path, states: list[_State]) -> None:
    table = pa.table(
        {
            "patch_id": [s.caption.patch_id for s in states],
            "key": [s.key for s in states],
            "style": [s.caption.style for s in states],
            "status": [_status(s) for s in states],
            "pass": [not s.last for s in states],
            "score": pa.array([score(s.last) for s in states], pa.float64()),
            "round": pa.array([s.round for s in states], pa.int32()),
            "violations": [json.dumps(s.last) for s in states],
            "caption": [s.text for s in states],
            "first_violations": [json.dumps(s.first) for s in states],
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_atomic(out / VERDICTS, [sink.getvalue().to_pybytes()])


def _types(states: list[_State], first: bool) -> dict[str, int]:
    c: Counter[str] = Counter()
    for s in states:
        c.update({v["type"] for v in (s.first if first else s.last)})
    return {t: c[t] for t in TYPES}


def _summary(
    out: Path, states: list[_State], no_stats: int, rounds: list[dict[str, Any]], t0: float
) -> VerifySummary:
    n = len(states)
    status = Counter(_status(s) for s in states)
    return VerifySummary(
        verified=n,
        passed=status["pass"],
        repaired=status["repaired"],
        failed=status["failed"],
        no_statistics=no_stats,
        pass_rate_first=round(status["pass"] / n, 4) if n else 1.0,
        pass_rate_final=round((status["pass"] + status["repaired"]) / n, 4) if n else 1.0,
        violations_first=_types(states, True),
        violations_final=_types(states, False),
        rounds=rounds,
        repair_cost=round(sum(r["cost"] for r in rounds), 6),
        files={"verdicts": str(out / VERDICTS), "report": str(out / REPORT)},
        seconds=round(time.perf_counter() - t0, 2),
    )
