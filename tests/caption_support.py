"""Shared pieces of the caption tests: prompt files, endpoint configs and server-log keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cenlib.captions.responses import request_key
from cenlib.config import CaptionConfig, EndpointConfig
from cenlib.prompts import PatchContext, get_style

KEY_ENV = "CEN_TEST_API_KEY"
"""Set by conftest before the session's cluster starts, so its workers inherit it."""


def label_maps(n: int, seed: int = 0) -> np.ndarray:
    """``n`` blocky 256 x 256 class maps of 2 to 5 classes (varied, so prompts differ)."""
    rng = np.random.default_rng(seed)
    maps = np.empty((n, 256, 256), np.uint8)
    for i in range(n):
        k = int(rng.integers(2, 6))
        classes = rng.choice(11, size=k, replace=False).astype(np.uint8)
        coarse = rng.choice(classes, size=(8, 8))
        maps[i] = np.kron(coarse, np.ones((32, 32), np.uint8))
    return maps


def write_prompts(
    out: Path,
    n: int,
    *,
    style: str = "chatearthnet-3.5",
    seed: int = 0,
    per_request: int = 1,
    facts: bool = True,
) -> list[str]:
    """A run directory's ``prompts.jsonl`` with ``n`` patches' prompts built like the prompt
    stage's (``per_request`` > 1: chatearthnet-4v lines of several patches, with fallbacks).
    ``facts=False`` writes them as files from before prompt records carried facts."""
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"p{i:05d}" for i in range(n)]
    ctxs = [PatchContext.from_labels(labels) for labels in label_maps(n, seed)]
    st = get_style(style)
    with open(out / "prompts.jsonl", "w", encoding="utf-8") as f:
        for s in range(0, n, per_request):
            group = list(zip(ids[s : s + per_request], ctxs[s : s + per_request], strict=True))
            if per_request == 1:
                pid, ctx = group[0]
                rec: dict[str, Any] = {
                    "patch_id": pid,
                    "facts": st.describe(ctx, 0, pid),
                    "messages": st.build(ctx, 0, pid),
                }
            else:
                assert st.build_batch is not None
                pids = [p for p, _ in group]
                rec = {
                    "patch_id": ",".join(pids),
                    "patch_ids": pids,
                    "facts": [st.describe(c, 0, p) for p, c in group],
                    "messages": st.build_batch([c for _, c in group], 0, pids),
                    "fallback": [st.build(c, 0, p) for p, c in group],
                }
            if not facts:
                del rec["facts"]
            f.write(json.dumps({**rec, "style": style, "seed": 0, "key": ""}) + "\n")
    return ids


def endpoint(base_url: str, **kw: Any) -> EndpointConfig:
    kw.setdefault("model", "fake-model")
    kw.setdefault("api_key_env", KEY_ENV)
    kw.setdefault("requests_per_minute", None)
    kw.setdefault("max_concurrency", 8)
    return EndpointConfig(base_url=base_url, **kw)


def caption_config(*endpoints: EndpointConfig, **kw: Any) -> CaptionConfig:
    kw.setdefault("backoff_s", 0.05)
    kw.setdefault("backoff_max_s", 0.5)
    kw.setdefault("batch_size", 25)
    return CaptionConfig(endpoints=endpoints, **kw)


def body_key(body: dict[str, Any]) -> str:
    """The request key of a request as the server received it."""
    params = {k: body[k] for k in ("temperature", "max_tokens") if k in body}
    return request_key(body["model"], body["messages"], params)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
