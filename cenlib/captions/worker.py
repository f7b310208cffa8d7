"""What runs on a Dask worker: one caption task answers its batch of requests.

:func:`caption_batch` reads its own prompt lines (by byte offset), answers them with asyncio
through a :class:`~cenlib.captions.pool.Pool` under the cluster-wide rate limiter and budget,
appends each answer to the task's fsync'd shard as it arrives (:class:`GroupCommit`) and
reports progress as Dask events (topic :data:`TOPIC`).

This module is what a worker imports for a caption task, so it imports only what answering
needs: no prompt styles, no ``openai`` until an OpenAI endpoint is used, nothing of the other
stages (their package imports cost a fresh worker seconds, tens of seconds on a busy machine).
What the endpoints do need, :func:`warm` imports on every worker while the client plans.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cenlib.captions import costs
from cenlib.captions.budget import Budget
from cenlib.captions.limiter import RateLimiter
from cenlib.captions.pool import Outcome, Pool, Request
from cenlib.captions.responses import (
    SHARD_PREFIX,
    SUFFIX,
    DeadLetterWriter,
    Response,
    ShardWriter,
    read_responses,
)
from cenlib.config import CaptionConfig
from cenlib.prompts import read_prompts_at

TOPIC = "cen-caption"
EVENT_EVERY_S = 0.25

Unit = tuple[int, int]
"""A request of the prompts file: (byte offset of its line, -1 for the line's request or k for
the k-th patch's fallback request of a multi-patch line)."""


async def warm(kinds: tuple[str, ...]) -> None:
    """Get a worker ready for caption tasks of endpoints of these ``kinds``: import their
    backends (the ``rules`` captioner with the prompt styles, or the ``openai`` SDK) and load
    the token table, in a thread.

    The stage runs it on every worker as it starts (``client.run(warm, kinds, wait=False)``), so
    that this happens while the client plans, not in the first task, and off the worker's event
    loop. Best effort: whatever fails here fails again, with its message, in the task.
    """
    with contextlib.suppress(Exception):
        await asyncio.to_thread(_warm, kinds)


def _warm(kinds: tuple[str, ...]) -> None:
    if "rules" in kinds:
        importlib.import_module("cenlib.captions.rules")
    if any(k != "rules" for k in kinds):
        importlib.import_module("cenlib.captions.openai_backend")
    costs.text_tokens("")


def load_requests(path: Path | str, units: Sequence[Unit]) -> list[Request]:
    """The requests of the prompt lines at ``units`` (read where they are), with their facts
    (a fallback request gets its own patch's)."""
    out = []
    prompts = read_prompts_at(path, [off for off, _ in units])
    for p, (_, sub) in zip(prompts, units, strict=True):
        if sub < 0:
            out.append(Request(p.ids, p.messages, p.seed, 0, p.facts))
        else:
            out.append(Request((p.ids[sub],), p.fallback[sub], p.seed, 0, p.facts_of(sub)))
    return out


@dataclass(frozen=True)
class CaptionTask:
    index: int
    prompts: str  # the prompts file; the task reads its own lines
    units: tuple[Unit, ...]
    caption: CaptionConfig
    responses_dir: str
    writer_id: str
    seed: int


class GroupCommit:
    """Appends answers to a task's shard from a worker thread, as many per ``fsync`` as arrived
    during the previous one (group commit): the event loop never waits for the disk, and an
    answer is durable one ``fsync`` after it arrived (a few milliseconds), not at the task's end.
    """

    def __init__(self, writer: ShardWriter) -> None:
        self.writer = writer
        self.pending: list[Response] = []
        self.flushing: asyncio.Task[None] | None = None

    def add(self, response: Response) -> None:
        self.pending.append(response)
        if self.flushing is None:
            self.flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                await asyncio.to_thread(self.writer.append_many, batch)
        finally:
            self.flushing = None

    async def close(self) -> None:
        while self.flushing is not None:
            await self.flushing


def _count(req: Request) -> Request:
    if req.tokens_in:
        return req
    return dataclasses.replace(req, tokens_in=costs.message_tokens(req.messages))


def _never() -> bool:
    return False


async def _answer_batch(
    task: CaptionTask,
    limiter: RateLimiter | None,
    budget: Budget | None,
    emit: Callable[[dict[str, Any]], None],
    cancelled: Callable[[], bool] = _never,
) -> dict[str, Any]:
    needs_tokens = budget is not None or any(e.tokens_per_minute for e in task.caption.endpoints)
    pool = Pool(task.caption, limiter=limiter, budget=budget, seed=task.seed)
    delta: Counter[str] = Counter()
    spent = [0.0]
    last = [time.monotonic()]

    def flush(force: bool = False) -> None:
        if delta and (force or time.monotonic() - last[0] >= EVENT_EVERY_S):
            emit({"task": task.index, **delta, "cost": spent[0]})
            delta.clear()
            spent[0] = 0.0
            last[0] = time.monotonic()

    limit = asyncio.Semaphore(sum(e.max_concurrency for e in task.caption.endpoints))
    # A task run again (its worker died) skips what its own shard already holds.
    own = Path(task.responses_dir) / f"{SHARD_PREFIX}{task.writer_id}{SUFFIX}"
    mine = {r.key for r in read_responses(own)} if own.is_file() else set()
    requests = load_requests(Path(task.prompts), task.units)
    todo = [r for r in requests if not mine or not mine & set(pool.keys(r.messages).values())]
    with (
        ShardWriter(task.responses_dir, task.writer_id) as shard,
        DeadLetterWriter(task.responses_dir, task.writer_id) as dead,
    ):
        commits = GroupCommit(shard)

        async def one(req: Request) -> Outcome:
            async with limit:
                if cancelled():  # nobody wants the answers: a resumed run sends it instead
                    out = Outcome(req, skipped="task cancelled (its client is gone)")
                else:
                    out = await pool.run(_count(req) if needs_tokens else req)
            if out.response is not None:
                commits.add(out.response)
                delta["answered"] += 1
                spent[0] += out.response.cost or 0.0
            elif out.dead is not None:
                dead.append(out.dead)
                delta["dead"] += 1
            else:
                delta["skipped"] += 1
            flush()
            return out

        try:
            outcomes = await asyncio.gather(*(one(r) for r in todo))
        finally:
            await commits.close()
            await pool.aclose()
            flush(force=True)
    stats = {
        name: {
            "requests": s.requests,
            "answered": s.answered,
            "tokens_in": s.tokens_in,
            "tokens_out": s.tokens_out,
            "cost": s.cost,
            "latency_s": s.latency_s,
            "faults": dict(s.faults),
        }
        for name, s in pool.stats.items()
    }
    skipped = [o.skipped for o in outcomes if o.skipped]
    return {
        "index": task.index,
        "endpoints": stats,
        "skipped": len(skipped),
        "skip_reason": skipped[0] if skipped else None,
    }


def caption_batch(
    task: CaptionTask, limiter: RateLimiter | None, budget: Budget | None
) -> dict[str, Any]:
    """Runs on a worker: answer one batch of requests, appending answers as they arrive.

    A task whose client has gone (killed, disconnected) is cancelled by the scheduler, but its
    thread cannot be stopped: it stops sending instead (what is in flight is still answered
    and stored). Otherwise it would pay for requests nobody waits for, and a run started again
    meanwhile would send them a second time."""
    try:
        from dask.context import thread_state
        from distributed import get_worker

        worker = get_worker()
        key = getattr(thread_state, "key", None)

        def emit(msg: dict[str, Any]) -> None:
            worker.log_event(TOPIC, msg)

        def cancelled() -> bool:
            ts = worker.state.tasks.get(key) if key is not None else None
            return ts is not None and ts.state == "cancelled"
    except ValueError:  # not on a worker (called directly)

        def emit(msg: dict[str, Any]) -> None:
            return None

        cancelled = _never

    return asyncio.run(_answer_batch(task, limiter, budget, emit, cancelled))
