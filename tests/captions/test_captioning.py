"""The caption stage on a real Dask cluster against real local OpenAI-compatible servers."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from _support import cen_process
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

from cenlib.captions import CaptionError, CaptionSummary, read_captions, run_captions
from cenlib.captions.responses import done_keys, read_responses
from cenlib.config import EndpointConfig
from cenlib.prompts import read_prompts


def _every_byte(out: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


@pytest.mark.slow
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
    write_prompts(tmp_path, 3)
    cfg = caption_config(endpoint("http://127.0.0.1:9/v1", api_key_env="CEN_NO_SUCH_KEY_VAR"))
    with pytest.raises(CaptionError, match="CEN_NO_SUCH_KEY_VAR"):
        run_captions(cfg, tmp_path, dask_client)


@pytest.mark.slow
def test_rate_limit_holds_for_the_cluster(tmp_path: Path, dask_client: Client) -> None:
    """2 worker processes, R requests per window: the server sees at most R in any window.

    How close the achieved rate comes to R is a throughput figure, measured side by side in
    ``benchmarks/bench_captions.py``, not asserted here (a loaded machine would fail it)."""
    window, r = 6.0, 60
    write_prompts(tmp_path, 200)
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        ep = endpoint(fake.base_url, requests_per_minute=int(r * 60 / window), max_concurrency=8)
        cfg = caption_config(ep, rate_window_s=window, batch_size=20)
        report = run_captions(cfg, tmp_path, dask_client)
    assert report["captioned"] == 200
    assert len(dask_client.scheduler_info()["workers"]) == 2
    assert fake.max_in_window(window) <= r
    assert len(fake.requests) == 200  # nothing sent twice, nothing refused by the server


def _run_config(tmp_path: Path, caption: dict) -> Path:
    import yaml

    cfg = {
        "name": "captions",
        "output": str(tmp_path / "run"),
        "caption": caption,
        "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1},
    }
    path = tmp_path / "caption.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_killed_then_resumed_pays_for_no_answered_key(tmp_path: Path, sig: int) -> None:
    write_prompts(tmp_path / "run", 150)
    with FakeOpenAI(api_key=CANARY_KEY, latency=0.05) as fake:
        caption = {
            "endpoints": [
                {
                    "base_url": fake.base_url,
                    "model": "fake-model",
                    "api_key_env": "CEN_TEST_API_KEY",
                    "max_concurrency": 2,
                    "requests_per_minute": None,
                }
            ],
            "batch_size": 10,
        }
        path = _run_config(tmp_path, caption)
        proc = cen_process("caption", str(path))
        shards = tmp_path / "run" / "responses"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if shards.is_dir() and len(done_keys(shards)) >= 40:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=60)  # a Ctrl-C must end the run by itself
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode != 0
        if sig == signal.SIGINT:
            assert proc.returncode == 130
            assert "run the same command again to resume" in (
                proc.stdout.read() if proc.stdout else ""
            )
        saved = done_keys(shards)
        n_first = len(fake.requests)
        assert 40 <= len(saved) < 150
        resumed = cen_process("caption", str(path))
        out, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, out
        second = fake.requests[n_first:]
    sent_again = {body_key(q.body) for q in second if q.body}
    assert not sent_again & saved  # nothing already answered was asked again
    caps = read_jsonl(tmp_path / "run" / "captions.jsonl")
    assert len(caps) == 150 == len({c["patch_id"] for c in caps})
    report = json.loads((tmp_path / "run" / "caption_report.json").read_text())
    assert report["already_answered"] == len(saved)
    assert CANARY_KEY not in out
    assert CANARY_KEY.encode() not in _every_byte(tmp_path / "run")


def test_budget_stops_cleanly_and_a_larger_one_finishes(
    tmp_path: Path, dask_client: Client
) -> None:
    write_prompts(tmp_path, 80)
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        # The fake server reports usage; price it so that ~30 answers fit in the budget.
        ep = endpoint(fake.base_url, price_in=1000.0, price_out=1000.0)
        cfg = caption_config(ep, max_tokens=50, batch_size=20)
        one = _one_cost(ep, tmp_path)
        budget = 30 * one
        first = run_captions(cfg, tmp_path, dask_client, max_cost=budget)
        assert first["skipped"] > 0 and "max_cost" in first["skip_reason"]
        assert first["cost_total"] <= budget + 1e-9
        assert 0 < first["captioned"] < 80
        second = run_captions(cfg, tmp_path, dask_client, max_cost=1e9)
    assert second["captioned"] == 80 and second["skipped"] == 0
    assert second["already_answered"] == first["captioned"]


def _one_cost(ep: EndpointConfig, tmp_path: Path) -> float:
    """The worst cost the budget reserves for one of these prompts (prompt + max_tokens)."""
    from cenlib.captions import costs

    prompts = list(read_prompts(tmp_path / "prompts.jsonl"))
    return max(costs.worst_cost(ep, costs.message_tokens(p.messages), 50) for p in prompts)


def test_4v_prompts_send_their_maps_as_png_parts(tmp_path: Path, dask_client: Client) -> None:
    write_prompts(tmp_path, 6, style="chatearthnet-4v")
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        report = run_captions(caption_config(endpoint(fake.base_url)), tmp_path, dask_client)
        bodies = [q.body for q in fake.requests if q.body]
    assert report["captioned"] == 6
    for body in bodies:
        parts = body["messages"][-1]["content"]
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        assert urls and all(u.startswith("data:image/png;base64,") for u in urls)


def test_batch_api_mode_captions_every_prompt(tmp_path: Path, dask_client: Client) -> None:
    ids = write_prompts(tmp_path, 40)
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        ep = endpoint(fake.base_url, price_in=2.0, price_out=4.0)
        cfg = caption_config(ep, mode="batch-api", poll_s=0.05)
        report = run_captions(cfg, tmp_path, dask_client)
        assert len(fake.uploads()) == 1 and len(fake.batches) == 1
        again = run_captions(cfg, tmp_path, dask_client)
        assert len(fake.uploads()) == 1  # nothing sent twice
    caps = read_jsonl(tmp_path / "captions.jsonl")
    assert sorted(c["patch_id"] for c in caps) == ids
    assert report["captioned"] == 40 and again["already_answered"] == 40
    # Half price: the Batch API discount.
    merged = list(read_responses(tmp_path / "responses.jsonl"))
    r = merged[0]
    assert r.cost == pytest.approx((r.tokens_in * 2.0 + r.tokens_out * 4.0) / 1e6 * 0.5)
    assert CANARY_KEY.encode() not in _every_byte(tmp_path)


@pytest.mark.e2e
def test_smollm2_endpoint_started_by_the_job_captions_for_real(
    tmp_path: Path, dask_client: Client
) -> None:
    """The real SmolLM2-135M on loopback (``make smollm2``), started and stopped by the job."""
    from rich.console import Console

    from cenlib.config import RunConfig
    from cenlib.job import caption_endpoints

    write_prompts(tmp_path, 3)
    cfg = RunConfig(
        output=tmp_path,
        caption=caption_config(
            EndpointConfig(kind="smollm2", max_concurrency=1, timeout_s=120),
            max_tokens=48,
            temperature=0,
        ),
    )
    with caption_endpoints(cfg, Console()) as caption:
        url = caption.endpoints[0].base_url
        assert url and url.startswith("http://127.0.0.1:")
        report = run_captions(caption, tmp_path, dask_client)
    caps = read_jsonl(tmp_path / "captions.jsonl")
    assert report["captioned"] == 3 and report["dead_letters"] == 0
    assert all(len(c["caption"].split()) >= 5 for c in caps)
    ep = report["endpoints"]["smollm2/smollm2"]
    assert ep["tokens_in"] > 300 and 0 < ep["tokens_out"] <= 3 * 48
    # The server is gone once the stage is done.
    with pytest.raises(OSError):
        import urllib.request

        urllib.request.urlopen(url + "/models", timeout=2)


@pytest.mark.slow
def test_token_limit_holds_for_the_cluster(tmp_path: Path, dask_client: Client) -> None:
    """TPM over 2 workers: in any window, the prompt tokens (as we count them) plus max_tokens
    of the requests the server received stay within the limit, as providers count them."""
    from cenlib.captions import costs

    window, max_tokens = 3.0, 100
    write_prompts(tmp_path, 40)
    per_request = max(
        costs.message_tokens(p.messages) + max_tokens
        for p in read_prompts(tmp_path / "prompts.jsonl")
    )
    limit = 8 * per_request  # about 8 requests per window
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        ep = endpoint(
            fake.base_url, tokens_per_minute=int(limit * 60 / window), requests_per_minute=None
        )
        cfg = caption_config(ep, rate_window_s=window, max_tokens=max_tokens, batch_size=10)
        report = run_captions(cfg, tmp_path, dask_client)
        arrivals = sorted(
            (q.t, costs.message_tokens(q.body["messages"]) + max_tokens)
            for q in fake.requests
            if q.body
        )
    assert report["captioned"] == 40
    worst = max(sum(n for t, n in arrivals if t0 <= t < t0 + window) for t0, _ in arrivals)
    assert worst <= limit
    busiest = sorted(
        sum(1 for t, _ in arrivals if t0 <= t < t0 + window)
        for t0, _ in arrivals
        if t0 + window <= arrivals[-1][0]
    )
    assert busiest[len(busiest) // 2] >= 6  # and the limit is used, not just obeyed


def test_4v_several_patches_per_request_split_or_fall_back(
    tmp_path: Path, dask_client: Client
) -> None:
    """Grouped 4v requests: answers that split give one caption per patch; answers that do not
    are followed by each patch's own request, and only those."""
    ids = write_prompts(tmp_path, 10, style="chatearthnet-4v", per_request=4)

    def responder(request: dict) -> str:
        n = sum(p["type"] == "image_url" for p in request["messages"][-1]["content"])
        if n == 1:
            return "A single patch: fields and a river."
        if n == 2:  # the last group (10 = 4 + 4 + 2): an answer that does not split
            return "Two pictures of fields, described together."
        return "\n\n".join(f"Image {k}: scene {k} of {n}." for k in range(1, n + 1))

    with FakeOpenAI(responder=responder, api_key=CANARY_KEY) as fake:
        report = run_captions(caption_config(endpoint(fake.base_url)), tmp_path, dask_client)
        images = [
            sum(p["type"] == "image_url" for p in q.body["messages"][-1]["content"])
            for q in fake.requests
            if q.body
        ]
        again = run_captions(caption_config(endpoint(fake.base_url)), tmp_path, dask_client)
        assert len(fake.requests) == len(images)  # the re-run sent nothing
    assert sorted(images) == [1, 1, 2, 4, 4]  # 3 grouped requests + 2 fallbacks
    caps = {c["patch_id"]: c["caption"] for c in read_jsonl(tmp_path / "captions.jsonl")}
    assert sorted(caps) == ids
    assert caps["p00000"] == "scene 1 of 4." and caps["p00007"] == "scene 4 of 4."
    assert caps["p00008"] == caps["p00009"] == "A single patch: fields and a river."
    assert report["captioned"] == 10 and report["multi_patch_answers_not_split"] == 1
    assert again["captioned"] == 10 and again["sent_this_run"] == 0


def test_batch_api_mode_falls_back_for_unsplit_4v_answers(
    tmp_path: Path, dask_client: Client
) -> None:
    ids = write_prompts(tmp_path, 6, style="chatearthnet-4v", per_request=3)

    def responder(request: dict) -> str:
        parts = request["messages"][-1]["content"]
        if sum(p["type"] == "image_url" for p in parts) == 1:
            return "One patch alone."
        return "Three scenes, told together without numbers."  # does not split

    with FakeOpenAI(responder=responder, api_key=CANARY_KEY) as fake:
        cfg = caption_config(endpoint(fake.base_url), mode="batch-api", poll_s=0.05)
        report = run_captions(cfg, tmp_path, dask_client)
        uploads = len(fake.uploads())
    caps = {c["patch_id"]: c["caption"] for c in read_jsonl(tmp_path / "captions.jsonl")}
    assert sorted(caps) == ids and set(caps.values()) == {"One patch alone."}
    assert uploads == 2  # the grouped requests, then the 6 fallbacks, in the same run
    assert report["multi_patch_answers_not_split"] == 2


@pytest.mark.e2e
def test_cen_caption_exits_1_with_dead_letters_outstanding(tmp_path: Path) -> None:
    """A script must tell an incomplete run from a complete one by the exit code alone."""
    write_prompts(tmp_path / "run", 6)
    with FakeOpenAI(api_key=CANARY_KEY, faults=["500"] * 2) as fake:
        caption = {
            "endpoints": [
                {
                    "base_url": fake.base_url,
                    "model": "fake-model",
                    "api_key_env": "CEN_TEST_API_KEY",
                    "requests_per_minute": None,
                }
            ],
            "max_attempts": 1,
        }
        proc = cen_process("caption", str(_run_config(tmp_path, caption)))
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "dead letters" in out
    assert len(read_jsonl(tmp_path / "run" / "dead_letters.jsonl")) >= 1


def test_summary_report_and_reader(tmp_path: Path, dask_client: Client) -> None:
    """run_captions returns a typed summary; caption_report.json is its dict, in field order;
    read_captions gives captions.jsonl's records."""
    write_prompts(tmp_path, 8)
    with FakeOpenAI(api_key=CANARY_KEY) as fake:
        summary = run_captions(caption_config(endpoint(fake.base_url)), tmp_path, dask_client)
    assert isinstance(summary, CaptionSummary)
    report = (tmp_path / "caption_report.json").read_text()
    assert report == json.dumps(summary.as_dict(), indent=1) + "\n"
    keys = list(json.loads(report))
    assert keys[:3] == ["prompts", "patches", "multi_patch_answers_not_split"]
    assert keys[-1] == "seconds"
    assert summary["captioned"] == summary.captioned == 8
    assert summary.line().startswith("caption: 8 of 8 patches captioned (8 answered now, 0 before)")
    assert summary.line().endswith(f"-> {tmp_path / 'captions.jsonl'}")
    caps = list(read_captions(tmp_path))
    assert [c.__dict__ for c in caps] == read_jsonl(tmp_path / "captions.jsonl")


@pytest.mark.slow
def test_rules_endpoint_writes_from_the_facts(tmp_path: Path, dask_client: Client) -> None:
    """The built-in captioner gets each request's facts: the same captions and request keys as
    from the English of a prompts file without facts, and English it cannot read does not
    matter while the facts are there."""
    cfg = caption_config(EndpointConfig(kind="rules"))
    runs = {name: tmp_path / name for name in ("facts", "english", "garbled")}
    write_prompts(runs["facts"], 12)
    write_prompts(runs["english"], 12, facts=False)
    runs["garbled"].mkdir()
    recs = read_jsonl(runs["facts"] / "prompts.jsonl")
    for rec in recs:
        rec["messages"][-1]["content"] = f"Describe the image {rec['patch_id']}."
    (runs["garbled"] / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    done = {name: run_captions(cfg, out, dask_client) for name, out in runs.items()}
    assert all(s.captioned == 12 and s.dead_letters == 0 for s in done.values())
    facts, english = (runs[n] / "captions.jsonl" for n in ("facts", "english"))
    assert facts.read_bytes() == english.read_bytes()

    def answers(name: str) -> list[tuple[str, str, int | None, int | None]]:
        merged = read_responses(runs[name] / "responses.jsonl")
        return [(r.key, r.content, r.tokens_in, r.tokens_out) for r in merged]

    assert answers("facts") == answers("english")
    garbled = [c.caption for c in read_captions(runs["garbled"])]
    assert garbled == [c.caption for c in read_captions(runs["facts"])]
