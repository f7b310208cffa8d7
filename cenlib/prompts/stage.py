"""Stage *prompt*: chat messages for every analysed patch, in the configured style, on Dask.

Reads what the analyze stage wrote (the store's ``region_counts`` and, for ``cen-layout``, the
layout columns of ``analysis.parquet``; the land-cover map itself for ``chatearthnet-4v``) and
writes ``<run>/prompts.jsonl``, one JSON object per ``ok`` patch, in store order::

    {"patch_id": ..., "style": "chatearthnet-3.5@1", "seed": 0, "key": sha256 of the messages,
     "facts": {...}, "messages": [{"role": "system", ...}, {"role": "user", ...}]}

``facts`` is the statement the messages were rendered from: the style's ``describe`` JSON
(:class:`~cenlib.prompts.styles.PromptStyle`), the same numbers and names the English states,
so that a reader (the ``rules`` captioner, a verifier) never parses the English back. A
multi-patch ``chatearthnet-4v`` line (``patch_ids``, ``fallback``) has a list of facts aligned
with ``patch_ids``. Nothing is sent to a model from ``facts``: the request keys hash the
messages only.

Fact version note: the shape of ``facts`` is that of the record's ``style`` (``name@version``):
a style whose statement changes shape gets a new version, as when its text changes. Files
written before records carried facts (record format 1) have no ``facts`` key; readers get
``None`` (:attr:`Prompt.facts`) and the ``rules`` captioner then reads the statement back from
the user message. :data:`RECORD_VERSION` (2: with ``facts``) is part of the parts' token, so a
re-run rebuilds the parts of an older format instead of reusing them.

One task per block of whole shards writes ``<run>/prompts/part-<block>-<token>.jsonl``
(atomically); a re-run skips parts already written, then the parts are joined in order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, as_completed, span

from cenlib.analysis import read_layouts, read_region_counts, table_path
from cenlib.config import RunConfig
from cenlib.ingest import array, open_group, store_url, true_colour
from cenlib.io import file_digest, stable_hash
from cenlib.prompts.read import PROMPTS
from cenlib.prompts.styles import ClassLayout, PatchContext, get_style
from cenlib.summary import Summary

RECORD_VERSION = 2  # 2: records carry "facts"; in the parts' token (see the module doc)


@dataclass(frozen=True)
class PromptTask:
    url: str
    table: str
    index: int
    start: int
    stop: int
    style: str
    seed: int
    include_rgb: bool
    part: str
    per_request: int = 1


def message_key(messages: list[dict[str, Any]]) -> str:
    """A stable hash of what a model is asked (the caption stage adds model and parameters)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def _layouts(table: str, start: int, stop: int) -> list[dict[int, ClassLayout]]:
    """Layout records of rows [start, stop) of the analysis table."""
    return [
        {k: ClassLayout.from_dict(d) for k, d in per.items()}
        for per in read_layouts(table, start, stop)
    ]


def prompt_block(task: PromptTask) -> dict[str, Any]:
    """Runs on a worker: the messages of patches [start, stop) into one part file."""
    g = open_group(task.url)
    a, b = task.start, task.stop
    status = np.asarray(array(g, "status")[a:b])
    ids = np.asarray(array(g, "patch_id")[a:b])
    counts = read_region_counts(g, a, b)
    style = get_style(task.style)
    labels = np.asarray(array(g, "land_cover")[a:b]) if style.needs_labels else None
    bands = [str(x) for x in np.asarray(array(g, "band")[:])]
    layouts = _layouts(task.table, a, b) if style.needs_grid else None
    size = int(array(g, "land_cover").shape[-1])
    items: list[tuple[str, PatchContext]] = []
    for i in np.flatnonzero(status == "ok"):
        rgb = None
        if task.include_rgb and style.needs_labels:
            refl = np.asarray(array(g, "reflectance")[a + int(i)])
            rgb = (true_colour(refl, bands) * 255).astype(np.uint8)
        ctx = PatchContext.from_counts(
            counts[i],
            size,
            layout=layouts[i] if layouts is not None else None,
            labels=labels[i] if labels is not None else None,
            rgb=rgb,
        )
        items.append((str(ids[i]), ctx))
    lines = []
    seed = task.seed
    if task.per_request == 1:
        for pid, ctx in items:
            messages = style.build(ctx, seed, pid)
            rec = {
                "patch_id": pid,
                "style": style.versioned,
                "seed": seed,
                "key": message_key(messages),
                "facts": style.describe(ctx, seed, pid),
                "messages": messages,
            }
            lines.append(json.dumps(rec) + "\n")
    else:  # chatearthnet-4v, several patches per request; each patch's own request as fallback
        if style.build_batch is None:
            raise ValueError(
                f"prompt style {style.versioned} puts one patch in a request; "
                f"set prompt.per_request: 1 (got {task.per_request})"
            )
        for s in range(0, len(items), task.per_request):
            group = items[s : s + task.per_request]
            pids = [pid for pid, _ in group]
            messages = style.build_batch([c for _, c in group], seed, pids)
            rec = {
                "patch_id": ",".join(pids),
                "patch_ids": pids,
                "style": style.versioned,
                "seed": seed,
                "key": message_key(messages),
                "facts": [style.describe(c, seed, pid) for pid, c in group],
                "messages": messages,
                "fallback": [style.build(c, seed, pid) for pid, c in group],
            }
            lines.append(json.dumps(rec) + "\n")
    tmp = f"{task.part}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, task.part)  # a part exists only once complete
    return {"index": task.index, "prompts": len(lines)}


@dataclass(frozen=True)
class PromptSummary(Summary):
    style: str
    prompts: int
    parts_skipped: int
    seconds: float
    file: str

    def line(self) -> str:
        return f"prompt: {self.prompts} prompts ({self.style}) -> {self.file}"


def run_prompts(cfg: RunConfig, client: Client, url: str | None = None) -> PromptSummary:
    """Build the prompts of every ok patch of the run's store (or the store at ``url``)."""
    url = url or store_url(cfg)
    out = cfg.output
    table = table_path(out)
    if not table.is_file():
        raise FileNotFoundError(f"no analysis table at {table}; run `cen analyze CONFIG` first")
    g = open_group(url)
    n = int(array(g, "patch_id").shape[0])
    step = max(int(str(g.attrs.get("shard_patches", 16))), 1)
    step *= max(1, cfg.analysis.batch // step)
    style = get_style(cfg.prompt.style)
    token = stable_hash(
        g.attrs.get("fingerprint"),
        style.versioned,
        RECORD_VERSION,
        cfg.prompt.seed,
        cfg.prompt.include_rgb,
        cfg.prompt.per_request,
        step,
        file_digest(table),  # content, not mtime: same inputs, same keys
    )[:8]
    parts_dir = out / "prompts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    tasks = [
        PromptTask(
            url,
            str(table),
            i,
            s,
            min(s + step, n),
            style.versioned,
            cfg.prompt.seed,
            cfg.prompt.include_rgb,
            str(parts_dir / f"part-{i:05d}-{token}.jsonl"),
            cfg.prompt.per_request,
        )
        for i, s in enumerate(range(0, n, step))
    ]
    todo = [t for t in tasks if not Path(t.part).is_file()]
    t0 = time.perf_counter()
    with span("prompt"):
        futures = [
            client.submit(prompt_block, t, key=f"prompt-{t.index:05d}-{token}", pure=False)
            for t in todo
        ]
        for fut in as_completed(futures):
            fut.result()
    total = 0
    tmp = out / f".{PROMPTS}.tmp"
    with open(tmp, "wb") as f:
        for t in tasks:
            with open(t.part, "rb") as part:
                while chunk := part.read(1 << 20):
                    f.write(chunk)
                    total += chunk.count(b"\n")
    os.replace(tmp, out / PROMPTS)
    for stale in parts_dir.glob("part-*.jsonl"):
        if not stale.name.endswith(f"-{token}.jsonl"):
            stale.unlink()
    return PromptSummary(
        style=style.versioned,
        prompts=total,
        parts_skipped=len(tasks) - len(todo),
        seconds=round(time.perf_counter() - t0, 2),
        file=str(out / PROMPTS),
    )
