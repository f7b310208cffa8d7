"""Stage *caption*: every prompt of the run answered once, by a pool of endpoints.

Entry: :func:`run_captions` ``(caption, out, client, *, max_cost, on_start, on_update)`` ->
:class:`CaptionSummary` (also written to ``caption_report.json``); :class:`CaptionError` when
it cannot start. Readers of what it writes: :func:`read_captions` (``captions.jsonl``,
:data:`CAPTIONS`, one :class:`Caption` per patch), :func:`read_responses`
(``responses.jsonl``: one :class:`Response` per answered request, with its tokens, cost and
``finish_reason``). Before a run: :func:`compute_estimate` and
:func:`print_estimate` (``cen caption --estimate``). Around a run: :func:`serve_smollm2` (the
local SmolLM2 server of a ``smollm2`` endpoint).

Modules:

- :mod:`.stage`: the entry (plan, Dask tasks, merge, outputs, summary); :mod:`.worker`: what a
  task runs on a worker; :mod:`.read`: the reader.
- :mod:`.backends`: what answers (:mod:`.openai_backend` for OpenAI-compatible servers through
  the ``openai`` SDK, or the built-in ``rules`` captioner) and the fault kinds the pool acts on.
- :mod:`.pool`: weighted routing, circuit breakers, backoff with jitter, failover, dead letters.
- :mod:`.limiter`: requests and tokens per window for a whole Dask cluster (an Actor).
- :mod:`.budget`: a spending limit for a whole Dask cluster (an Actor).
- :mod:`.responses`: request keys and fsync'd append-only answer shards; resume; merge.
- :mod:`.costs`: token counts (cl100k_base offline), prices, the estimate (:mod:`.estimate`).
- :mod:`.batch_api`: the OpenAI Batch API route, resumable at every step.
- :mod:`.rules`: a deterministic, seeded writer of one paragraph from the facts of a
  ``chatearthnet-3.5`` or ``cen-layout`` prompt; the demo's default and a baseline that
  states nothing the statistics do not support.
- :mod:`.smollm2`: the real local LLM (SmolLM2-135M-Instruct) on loopback, for offline runs.

Names load on first use (PEP 562): a caption task on a Dask worker imports this package before
:mod:`.worker`, and should not import the stage's client side, rich or the SmolLM2 server too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cenlib.lazy import lazy_exports

if TYPE_CHECKING:
    from cenlib.captions.estimate import compute_estimate, print_estimate
    from cenlib.captions.read import (
        CAPTIONS,
        Caption,
        CaptionsReadError,
        caption_lines,
        read_captions,
        read_captions_at,
    )
    from cenlib.captions.responses import Response, read_responses
    from cenlib.captions.smollm2 import Smollm2Unavailable, serve_smollm2
    from cenlib.captions.stage import CaptionError, CaptionSummary, run_captions

_LAZY: dict[str, str] = {
    **dict.fromkeys(("compute_estimate", "print_estimate"), "cenlib.captions.estimate"),
    **dict.fromkeys(
        (
            "CAPTIONS",
            "Caption",
            "CaptionsReadError",
            "caption_lines",
            "read_captions",
            "read_captions_at",
        ),
        "cenlib.captions.read",
    ),
    **dict.fromkeys(("Response", "read_responses"), "cenlib.captions.responses"),
    **dict.fromkeys(("Smollm2Unavailable", "serve_smollm2"), "cenlib.captions.smollm2"),
    **dict.fromkeys(("CaptionError", "CaptionSummary", "run_captions"), "cenlib.captions.stage"),
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = [
    "CAPTIONS",
    "Caption",
    "CaptionError",
    "CaptionSummary",
    "CaptionsReadError",
    "Response",
    "Smollm2Unavailable",
    "caption_lines",
    "compute_estimate",
    "print_estimate",
    "read_captions",
    "read_captions_at",
    "read_responses",
    "run_captions",
    "serve_smollm2",
]
