"""The caption stage on a real Dask cluster against real local OpenAI-compatible servers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from caption_support import (
    body_key,
    caption_config,
    endpoint,
    read_jsonl,
    write_prompts,
)
from conftest import CANARY_KEY
from distributed import Client
from openai_server import FakeOpenAI, random_faults

from cenlib.captioning import run_captions
from cenlib.captions.responses import read_responses


def _every_byte(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


def test_faults_every_prompt_captioned_once_or_dead_lettered(
    tmp_path: Path, dask_client: Client
) -> None:
    """Under 20 % injected faults of every kind, no prompt is lost and none is duplicated."""
    ids = write_prompts(tmp_path, 200)
    with FakeOpenAI(
        faults=random_faults(0.2, seed=3),
        retry_after=0.2,
        timeout_delay=1.5,
        slow_delay=0.3,
        api_key=CANARY_KEY,
    ) as fake:
        ep = endpoint(fake.base_url, timeout_s=1.0)
        report = run_captions(
            caption_config(ep, max_attempts=6, batch_size=40), tmp_path, dask_client
        )
        log = fake.requests
    faults = Counter(r.fault for r in log)
    assert {"429", "500", "503", "timeout", "drop", "malformed", "empty_choices", "slow"} <= set(
        faults
    )
    captions = read_jsonl(tmp_path / "captions.jsonl")
    dead = read_jsonl(tmp_path / "dead_letters.jsonl")
    captioned = [c["patch_id"] for c in captions]
    dead_ids = [d["patch_id"] for d in dead]
    assert len(captioned) == len(set(captioned))  # none duplicated
    assert sorted(captioned + dead_ids) == ids  # none lost
    assert all(d["error"] and d["attempts"] == 6 for d in dead)
    assert report["captioned"] == len(captions) and report["dead_letters"] == len(dead)
    # Every caption is the server's answer to that very request (none crossed over).
    answers = {body_key(r.body): r.content for r in log if r.answered and r.body}
    for c in captions:
        assert answers[c["key"]] == c["caption"]
    # The stage kept one answer per key even if a request was answered after its client gave up.
    merged = list(read_responses(tmp_path / "responses.jsonl"))
    assert len({r.key for r in merged}) == len(merged) == len(captions)
    per_ep = report["endpoints"][ep.label]
    assert per_ep["answered"] == len(captions)
    assert sum(per_ep["faults"].values()) > 0
    assert CANARY_KEY.encode() not in _every_byte(tmp_path)


def test_resume_sends_nothing_already_answered(tmp_path: Path, dask_client: Client) -> None:
    ids = write_prompts(tmp_path, 60)
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        cfg = caption_config(endpoint(fake.base_url))
        first = run_captions(cfg, tmp_path, dask_client)
        n_first = len(fake.requests)
        again = run_captions(cfg, tmp_path, dask_client)
        assert len(fake.requests) == n_first == 60
    assert first["captioned"] == again["captioned"] == len(ids)
    assert again["sent_this_run"] == 0 and again["already_answered"] == 60


def test_identical_requests_are_sent_once(tmp_path: Path, dask_client: Client) -> None:
    write_prompts(tmp_path, 10)
    lines = (tmp_path / "prompts.jsonl").read_text().splitlines()
    dup = json.loads(lines[0])
    dup["patch_id"] = "p-copy"
    (tmp_path / "prompts.jsonl").write_text("\n".join([*lines, json.dumps(dup)]) + "\n")
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        report = run_captions(caption_config(endpoint(fake.base_url)), tmp_path, dask_client)
        assert len(fake.requests) == 10
    caps = {c["patch_id"]: c for c in read_jsonl(tmp_path / "captions.jsonl")}
    assert len(caps) == 11 and caps["p-copy"]["caption"] == caps["p00000"]["caption"]
    assert report["duplicates_sent_once"] == 1


def test_failover_when_an_endpoint_goes_down(tmp_path: Path, dask_client: Client) -> None:
    ids = write_prompts(tmp_path, 120)
    with (
        FakeOpenAI(api_key=CANARY_KEY, latency=0.02) as a,
        FakeOpenAI(api_key=CANARY_KEY, latency=0.02) as b,
    ):
        down = {"done": False}

        def responder(request: dict) -> str:
            # Endpoint a goes down for good after its 20th answer, mid-run.
            if len(a.requests) >= 20 and not down["done"]:
                down["done"] = True
                a.down("503")
            return "caption from a"

        a.responder = responder
        b.responder = lambda request: "caption from b"
        cfg = caption_config(
            endpoint(a.base_url, name="a", max_concurrency=4),
            endpoint(b.base_url, name="b", max_concurrency=4),
            breaker_failures=3,
            breaker_cooldown_s=60,
            batch_size=30,
        )
        report = run_captions(cfg, tmp_path, dask_client)
    caps = read_jsonl(tmp_path / "captions.jsonl")
    assert sorted(c["patch_id"] for c in caps) == ids
    by_ep = Counter(c["endpoint"] for c in caps)
    assert by_ep["a"] >= 10 and by_ep["b"] >= 60, by_ep
    assert report["dead_letters"] == 0
    # The breaker kept traffic off the dead endpoint: a handful of 503s per task, not one per
    # remaining request.
    assert report["endpoints"]["a"]["faults"].get("server", 0) <= 3 * 4 * 2 + 8


def test_endpoint_without_key_is_named(tmp_path: Path, dask_client: Client) -> None:
    from cenlib.captioning import CaptionError

    write_prompts(tmp_path, 3)
    cfg = caption_config(endpoint("http://127.0.0.1:9/v1", api_key_env="CEN_NO_SUCH_KEY_VAR"))
    with pytest.raises(CaptionError, match="CEN_NO_SUCH_KEY_VAR"):
        run_captions(cfg, tmp_path, dask_client)
