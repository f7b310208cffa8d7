"""The caption stage: every prompt of ``prompts.jsonl`` answered once, by a pool of endpoints.

``run_captions`` reads the prompts, drops those whose request key is already answered (in
``<run>/responses/``: a resumed run pays for nothing twice), sends identical requests once, and
maps batches of ``caption.batch_size`` requests to Dask tasks (``caption-NNNNN-token``, in
``span("caption")``). Each task (:func:`cenlib.captions.worker.caption_batch`) answers its
batch with asyncio through a :class:`~cenlib.captions.pool.Pool`, under the cluster-wide rate
limiter and budget, and appends each answer to its own fsync'd shard as it arrives. Tasks
report progress as Dask events (topic ``cen-caption``), which drive the progress bar (rate,
ETA, spend). At the end the shards are merged and the run directory gets:

- ``responses.jsonl``: one line per answered request (the accounting of every answer);
- ``captions.jsonl``: one line per patch: ``patch_id``, ``style``, ``key``, ``endpoint``,
  ``model``, ``caption`` (patches with identical prompts share one answer);
  :func:`~cenlib.captions.read.read_captions` reads it;
- ``dead_letters.jsonl``: what still failed (patch id, endpoint, error, attempts);
- ``caption_report.json``: per endpoint and per run: requests, answers, tokens, cost,
  latency percentiles, faults by kind; budget; skipped: the :class:`CaptionSummary`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, as_completed, span

from cenlib.captions import costs
from cenlib.captions.backends import Fault, api_key
from cenlib.captions.budget import Budget, ClusterBudget
from cenlib.captions.limiter import ClusterRateLimiter, Limits, RateLimiter
from cenlib.captions.read import CAPTIONS
from cenlib.captions.responses import (
    Response,
    done_keys,
    merge,
    outstanding_dead_letters,
    read_responses,
    request_key,
)
from cenlib.captions.worker import TOPIC, CaptionTask, Unit, caption_batch, load_requests, warm
from cenlib.config import CaptionConfig
from cenlib.errors import CenError
from cenlib.io import file_digest, stable_hash, write_atomic
from cenlib.prompts import PROMPTS, Prompt, PromptsError, get_style, prompt_lines
from cenlib.summary import Summary

RESPONSES_DIR = "responses"
MERGED = "responses.jsonl"
DEAD = "dead_letters.jsonl"
REPORT = "caption_report.json"
BATCH_PRICE_FACTOR = 0.5
"""The Batch API bills half the endpoint's prices (OpenAI's published batch discount)."""

__all__ = [
    "CAPTIONS",
    "DEAD",
    "MERGED",
    "REPORT",
    "RESPONSES_DIR",
    "CaptionError",
    "CaptionSummary",
    "Plan",
    "PromptRef",
    "limits_of",
    "load_requests",
    "plan_requests",
    "run_captions",
    "split_failures",
    "unsplit_retries",
]


class CaptionError(CenError, RuntimeError):
    """The caption stage cannot start; the message says what to fix."""


@dataclass(frozen=True)
class CaptionSummary(Summary):
    """What a caption run did; ``caption_report.json`` is its :meth:`as_dict`."""

    prompts: int
    patches: int
    multi_patch_answers_not_split: int
    captioned: int
    sent_this_run: int
    answered_this_run: int
    already_answered: int
    duplicates_sent_once: int
    dead_letters: int
    skipped: int
    skip_reason: str | None
    missing: int
    cost_this_run: float
    cost_total: float
    tokens_in_total: int
    tokens_out_total: int
    max_cost: float | None
    endpoints: dict[str, dict[str, Any]]  # per endpoint label: requests, answers, tokens, ...
    merge: dict[str, int]  # shards merged, duplicate answers and bad lines dropped
    files: dict[str, str]  # captions, responses, dead_letters
    seconds: float

    def line(self) -> str:
        return (
            f"caption: {self.captioned} of {self.patches} patches captioned "
            f"({self.answered_this_run} answered now, {self.already_answered} before); "
            f"{self.dead_letters} dead letters, {self.skipped} left by the budget; "
            f"spent ${self.cost_this_run:.4f} now, ${self.cost_total:.4f} in all -> "
            f"{self.files['captions']}"
        )


def _split(style: str, text: str, n: int) -> list[str] | None:
    """One caption per patch of a multi-patch answer, by the style's own splitter.

    Looked up by name: a prompts file of an older style version is still answered, and splitting
    reads the answer's markers, not the prompt's wording.
    """
    return get_style(style.partition("@")[0]).split_answer(text, n)


# ---- the stage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptRef:
    """A prompt line, without its messages: where it is and its request keys per model (and,
    for a multi-patch line, those of each patch's fallback request)."""

    patch_ids: tuple[str, ...]
    style: str
    offset: int
    keys: tuple[str, ...]
    fallback_keys: tuple[tuple[str, ...], ...] = ()


@dataclass
class Plan:
    """What a run will send: unique requests not yet answered, and what is already done."""

    path: Path
    refs: list[PromptRef]
    todo: list[Unit]  # the unique, unanswered requests
    answered: int  # prompt lines whose request is already answered
    duplicates: int  # prompt lines that share a request with an earlier one


def _prompts(path: Path) -> Iterator[tuple[int, Prompt]]:
    """(byte offset, prompt) of every line, one at a time; a bad file stops the stage."""
    try:
        for _, offset, prompt in prompt_lines(path):
            yield offset, prompt
    except PromptsError as e:
        raise CaptionError(str(e)) from e


def plan_requests(path: Path, caption: CaptionConfig, responses_dir: Path) -> Plan:
    """Stream the prompts once; keep their keys, not their messages (memory stays small).

    A multi-patch line whose answer is stored but could not be split (see
    :func:`split_failures`) has its fallback requests planned instead.
    """
    done = done_keys(responses_dir) if responses_dir.is_dir() else set()
    models = sorted({e.model_name for e in caption.endpoints})
    params = caption.params

    def keys_of(messages: list[dict[str, Any]]) -> tuple[str, ...]:
        return tuple(request_key(m, messages, params) for m in models)

    seen: set[str] = set()
    refs: list[PromptRef] = []
    todo: list[Unit] = []
    answered = duplicates = 0
    for offset, p in _prompts(path):
        ref = PromptRef(
            p.ids, p.style, offset, keys_of(p.messages), tuple(keys_of(m) for m in p.fallback)
        )
        refs.append(ref)
        if any(k in done for k in ref.keys):
            answered += 1
        elif ref.keys[0] in seen:
            duplicates += 1
        else:
            seen.add(ref.keys[0])
            todo.append((offset, -1))
    for ref, sub in split_failures(refs, responses_dir):
        if not any(k in done for k in ref.fallback_keys[sub]):
            todo.append((ref.offset, sub))
    return Plan(path, refs, todo, answered, duplicates)


def _answers(responses_dir: Path, keys: set[str]) -> dict[str, str]:
    if not keys or not responses_dir.is_dir():
        return {}
    return {r.key: r.content for r in read_responses(responses_dir) if r.key in keys}


def split_failures(refs: Sequence[PromptRef], responses_dir: Path) -> list[tuple[PromptRef, int]]:
    """(line, patch) pairs whose multi-patch answer is stored but does not split into one
    caption per patch: they need their fallback request."""
    multi = [r for r in refs if len(r.patch_ids) > 1]
    answers = _answers(responses_dir, {k for r in multi for k in r.keys})
    out: list[tuple[PromptRef, int]] = []
    for ref in multi:
        text = next((answers[k] for k in ref.keys if k in answers), None)
        if text is not None and _split(ref.style, text, len(ref.patch_ids)) is None:
            out.extend((ref, i) for i in range(len(ref.patch_ids)))
    return out


def check_keys(caption: CaptionConfig) -> None:
    """Fail before sending if an endpoint's key variable is unset (names the variable only)."""
    for e in caption.endpoints:
        if e.kind == "openai":
            try:
                api_key(e)
            except Fault as f:
                raise CaptionError(str(f.args[0])) from None


def limits_of(caption: CaptionConfig) -> dict[str, Limits]:
    """Each endpoint's per-minute limits, scaled to ``caption.rate_window_s`` (60 by default)."""
    w = caption.rate_window_s
    # The margin absorbs the spread between a booked send time and the arrival at the server
    # (a new task's first request opens a connection): 1 s a minute, never under 0.15 s.
    margin = max(w / 60.0, 0.15)

    def scaled(per_minute: int | None) -> int | None:
        return None if per_minute is None else max(1, int(per_minute * w / 60.0))

    return {
        e.label: Limits(
            scaled(e.requests_per_minute), scaled(e.tokens_per_minute), window=w, margin=margin
        )
        for e in caption.endpoints
        if e.kind != "rules" and (e.requests_per_minute or e.tokens_per_minute)
    }


def spent_so_far(responses_dir: Path) -> float:
    if not responses_dir.is_dir():
        return 0.0
    return float(sum(r.cost or 0.0 for r in read_responses(responses_dir)))


class Progress:
    """Answers, dead letters and spend as events arrive (thread-safe)."""

    def __init__(self, on_update: Callable[[dict[str, float]], None] | None) -> None:
        self.totals: Counter[str] = Counter()
        self.cost = 0.0
        self._lock = threading.Lock()
        self.on_update = on_update

    def __call__(self, event: Any) -> None:
        _, msg = event
        with self._lock:
            for k in ("answered", "dead", "skipped"):
                self.totals[k] += int(msg.get(k, 0))
            self.cost += float(msg.get("cost", 0.0))
            snapshot = {**self.totals, "cost": self.cost}
        if self.on_update is not None:
            self.on_update(snapshot)


def run_captions(
    caption: CaptionConfig,
    out: Path,
    client: Client,
    *,
    max_cost: float | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_update: Callable[[dict[str, float]], None] | None = None,
) -> CaptionSummary:
    """Answer every prompt of ``out/prompts.jsonl``; returns the stage summary (also written
    to ``caption_report.json``).

    ``max_cost`` overrides ``caption.max_cost``; ``on_start(to_send, already_answered)`` is
    called once the plan is made, ``on_update(totals)`` as answers arrive (answered, dead,
    skipped, cost).
    """
    t0 = time.perf_counter()
    check_keys(caption)
    if caption.mode == "online":
        # Workers import what the endpoints need while the prompts are planned here.
        kinds = tuple(sorted({e.kind for e in caption.endpoints}))
        client.run(warm, kinds, wait=False, on_error="ignore")
    responses_dir = out / RESPONSES_DIR
    responses_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_requests(out / PROMPTS, caption, responses_dir)
    budget_limit = max_cost if max_cost is not None else caption.max_cost
    if caption.mode == "batch-api":
        passes = [_batch_api(caption, out, plan.path, plan.todo)]
        retry = unsplit_retries(plan, responses_dir)
        if retry:
            passes.append(_batch_api(caption, out, plan.path, retry))
        return _report(out, write_outputs(caption, out, plan, passes, budget_limit), t0)
    if on_start is not None:
        on_start(len(plan.todo), plan.answered)
    limits = limits_of(caption)
    limiter = ClusterRateLimiter.start(client, limits) if limits and plan.todo else None
    budget = (
        ClusterBudget.start(client, budget_limit, spent_so_far(responses_dir))
        if budget_limit is not None and plan.todo
        else None
    )
    progress = Progress(on_update)
    results: list[dict[str, Any]] = []
    client.subscribe_topic(TOPIC, progress)  # type: ignore[no-untyped-call]
    try:
        with span("caption"):
            results += _send(client, caption, plan.path, plan.todo, responses_dir, limiter, budget)
            # Multi-patch answers that do not split: one request per patch, now.
            retry = unsplit_retries(plan, responses_dir)
            if retry:
                results += _send(client, caption, plan.path, retry, responses_dir, limiter, budget)
    finally:
        client.unsubscribe_topic(TOPIC)  # type: ignore[no-untyped-call]
        if limiter is not None:
            limiter.close()
        if budget is not None:
            budget.close()
    return _report(out, write_outputs(caption, out, plan, results, budget_limit), t0)


def _report(out: Path, report: dict[str, Any], t0: float) -> CaptionSummary:
    """The summary of a run started at ``t0``, written to ``caption_report.json``."""
    summary = CaptionSummary(**report, seconds=round(time.perf_counter() - t0, 2))
    (out / REPORT).write_text(json.dumps(summary.as_dict(), indent=1) + "\n", encoding="utf-8")
    return summary


def _send(
    client: Client,
    caption: CaptionConfig,
    path: Path,
    units: Sequence[Unit],
    responses_dir: Path,
    limiter: RateLimiter | None,
    budget: Budget | None,
) -> list[dict[str, Any]]:
    """One Dask task per ``caption.batch_size`` requests; their results as they finish."""
    # Content, never time: the config, the units and the prompts file they index.
    token = stable_hash(caption.model_dump(mode="json"), list(units), file_digest(path))[:8]
    step = caption.batch_size
    tasks = [
        CaptionTask(
            i,
            str(path),
            tuple(units[s : s + step]),
            caption,
            str(responses_dir),
            f"caption-{token}-{i:05d}",
            i,
        )
        for i, s in enumerate(range(0, len(units), step))
    ]
    futures = [
        client.submit(
            caption_batch, t, limiter, budget, key=f"caption-{t.index:05d}-{token}", pure=False
        )
        for t in tasks
    ]
    return [fut.result() for fut in as_completed(futures)]  # type: ignore[no-untyped-call]


def unsplit_retries(plan: Plan, responses_dir: Path) -> list[Unit]:
    """Fallback requests still to send after a pass: multi-patch answers that did not split."""
    planned, done = set(plan.todo), done_keys(responses_dir)
    return [
        (ref.offset, sub)
        for ref, sub in split_failures(plan.refs, responses_dir)
        if (ref.offset, sub) not in planned and not any(k in done for k in ref.fallback_keys[sub])
    ]


def _batch_api(caption: CaptionConfig, out: Path, path: Path, units: list[Unit]) -> dict[str, Any]:
    """``caption.mode: batch-api``: the OpenAI Batch API of the first endpoint (see
    :mod:`cenlib.captions.batch_api`); resumable from ``<run>/batch-api/state.json``."""
    import openai

    from cenlib.captions.batch_api import BatchRequest, run_batch_api

    ep = caption.endpoints[0]
    if ep.kind != "openai":
        raise CaptionError(
            "caption.mode batch-api needs an endpoint of kind openai first in caption.endpoints"
        )
    client = openai.OpenAI(base_url=ep.base_url, api_key=api_key(ep), timeout=ep.timeout_s)
    params = caption.params
    requests = [
        BatchRequest(
            request_key(ep.model_name, r.messages, params),
            r.patch_label,
            {"model": ep.model_name, "messages": r.messages, **params},
        )
        for r in load_requests(path, units)
    ]

    def price(tokens_in: int | None, tokens_out: int | None) -> float | None:
        c = costs.cost(ep, tokens_in, tokens_out)
        return None if c is None else c * BATCH_PRICE_FACTOR

    rep = run_batch_api(
        client,
        requests,
        out / "batch-api",
        out / RESPONSES_DIR,
        endpoint=ep.label,
        price=price,
        poll_s=caption.poll_s,
        max_attempts=caption.max_attempts,
    )
    stats: dict[str, Any] = {
        "requests": rep.requested - rep.skipped,
        "answered": rep.answered,
        "tokens_in": rep.tokens_in,
        "tokens_out": rep.tokens_out,
        "cost": rep.cost or 0.0,
        "latency_s": [],
        "faults": {"dead": rep.dead} if rep.dead else {},
    }
    return {"index": 0, "endpoints": {ep.label: stats}, "skipped": 0, "skip_reason": None}


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 4),
        "p95": round(float(np.percentile(a, 95)), 4),
        "max": round(float(a.max()), 4),
    }


def _captions_of(
    ref: PromptRef, by_key: dict[str, Response]
) -> tuple[list[tuple[Response | None, str | None]], bool]:
    """Each patch's answer and caption of one prompt line, and whether its multi-patch answer
    did not split (its patches then take their fallback answers)."""
    hit = next((by_key[k] for k in ref.keys if k in by_key), None)
    if hit is None or len(ref.patch_ids) == 1:
        return [(hit, hit.content if hit else None)], False
    split = _split(ref.style, hit.content, len(ref.patch_ids))
    if split is not None:
        return [(hit, text) for text in split], False
    ones = [next((by_key[k] for k in keys if k in by_key), None) for keys in ref.fallback_keys]
    return [(one, one.content if one else None) for one in ones], True


def write_outputs(
    caption: CaptionConfig,
    out: Path,
    plan: Plan,
    results: list[dict[str, Any]],
    budget_limit: float | None,
) -> dict[str, Any]:
    """Merge the answers and write captions, dead letters; the report's fields but ``seconds``
    (in :class:`CaptionSummary` order)."""
    responses_dir = out / RESPONSES_DIR
    order = [p.patch_ids[0] for p in plan.refs]
    merged = merge(responses_dir, out / MERGED, order=order)
    by_key = {r.key: r for r in read_responses(out / MERGED)}
    missing: list[str] = []
    unsplit = 0
    lines: list[bytes] = []
    for p in plan.refs:
        parts, not_split = _captions_of(p, by_key)
        unsplit += not_split
        for pid, (resp, text) in zip(p.patch_ids, parts, strict=True):
            if resp is None or text is None:
                missing.append(pid)
                continue
            rec = {
                "patch_id": pid,
                "style": p.style,
                "key": resp.key,
                "endpoint": resp.endpoint,
                "model": resp.model,
                "caption": text,
            }
            lines.append((json.dumps(rec) + "\n").encode())
    captioned = len(lines)
    write_atomic(out / CAPTIONS, lines)
    letters = outstanding_dead_letters(responses_dir)
    write_atomic(out / DEAD, [(json.dumps(d.to_dict()) + "\n").encode() for d in letters])
    per_ep: dict[str, dict[str, Any]] = {}
    for e in caption.endpoints:
        rows = [r["endpoints"][e.label] for r in results if e.label in r["endpoints"]]
        faults: Counter[str] = Counter()
        lat: list[float] = []
        for row in rows:
            faults.update(row["faults"])
            lat.extend(row["latency_s"])
        per_ep[e.label] = {
            "model": e.model_name,
            "kind": e.kind,
            "requests": sum(r["requests"] for r in rows),
            "answered": sum(r["answered"] for r in rows),
            "tokens_in": sum(r["tokens_in"] for r in rows),
            "tokens_out": sum(r["tokens_out"] for r in rows),
            "cost": round(sum(r["cost"] for r in rows), 6),
            "latency_s": _percentiles(lat),
            "faults": dict(faults),
        }
    all_resp = by_key.values()
    skipped = sum(r["skipped"] for r in results)
    reasons = [r["skip_reason"] for r in results if r["skip_reason"]]
    return {
        "prompts": len(plan.refs),
        "patches": sum(len(p.patch_ids) for p in plan.refs),
        "multi_patch_answers_not_split": unsplit,
        "captioned": captioned,
        "sent_this_run": sum(v["requests"] for v in per_ep.values()),
        "answered_this_run": sum(v["answered"] for v in per_ep.values()),
        "already_answered": plan.answered,
        "duplicates_sent_once": plan.duplicates,
        "dead_letters": len(letters),
        "skipped": skipped,
        "skip_reason": reasons[0] if reasons else None,
        "missing": len(missing),
        "cost_this_run": round(sum(v["cost"] for v in per_ep.values()), 6),
        "cost_total": round(sum(r.cost or 0.0 for r in all_resp), 6),
        "tokens_in_total": sum(r.tokens_in or 0 for r in all_resp),
        "tokens_out_total": sum(r.tokens_out or 0 for r in all_resp),
        "max_cost": budget_limit,
        "endpoints": per_ep,
        "merge": {
            "shards": merged.shards,
            "duplicates": len(merged.duplicates),
            "bad_lines": len(merged.bad),
        },
        "files": {
            "captions": str(out / CAPTIONS),
            "responses": str(out / MERGED),
            "dead_letters": str(out / DEAD),
        },
    }
