"""The caption stage's parts: endpoints, the pool, limits, budget, responses, captioners.

- :mod:`.backends`: what answers (an OpenAI-compatible server through the ``openai`` SDK, or the
  built-in ``rules`` captioner) and the fault kinds the pool acts on.
- :mod:`.pool`: weighted routing, circuit breakers, backoff with jitter, failover, dead letters.
- :mod:`.limiter`: requests and tokens per window for a whole Dask cluster (an Actor).
- :mod:`.budget`: a spending limit for a whole Dask cluster (an Actor).
- :mod:`.responses`: request keys and fsync'd append-only answer shards; resume; merge.
- :mod:`.costs`: token counts (cl100k_base offline), prices, the estimate.
- :mod:`.batch_api`: the OpenAI Batch API route, resumable at every step.
- :mod:`.rules`: a deterministic, seeded writer of one paragraph from the structured statistics
  of the ``chatearthnet-3.5`` and ``cen-layout`` styles; the demo's default and a baseline that
  states nothing the statistics do not support.
- :mod:`.smollm2`: the real local LLM (SmolLM2-135M-Instruct) on loopback, for offline runs.

The stage itself is :mod:`cenlib.captions.stage`.
"""
