"""The verify stage on a real Dask cluster and a real Zarr store: verdicts, and the repair loop
through a real HTTP server speaking the OpenAI protocol (wrong first, right when corrected)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from caption_support import endpoint, label_maps, write_prompts
from distributed import Client
from openai_server import FakeOpenAI

from cenlib.analysis import region_counts
from cenlib.captions import read_captions, run_captions
from cenlib.captions.rules import answer as rules_answer
from cenlib.config import CaptionConfig, RunConfig
from cenlib.verify import read_verdicts, run_verify

N = 12
WRONG = (
    "A dense mangrove forest covers the whole image, with a glacier in the top left corner and "
    "snowfields along the bottom edge; there is nothing else to see in this scene at all."
)


def _store(out: Path, ids: list[str], maps: np.ndarray) -> None:
    """The two arrays of a run's store the verify stage reads: patch ids and region counts."""
    g = zarr.open_group(str(out / "dataset.zarr"), mode="w")
    g.create_array("patch_id", shape=(len(ids),), dtype=str)[:] = np.array(ids, dtype=object)
    g.create_array("region_counts", data=region_counts(maps))


def _run(tmp_path: Path, caption: CaptionConfig, rounds: int = 2) -> RunConfig:
    out = tmp_path / "run"
    ids = write_prompts(out, N)
    _store(out, ids, label_maps(N))
    return RunConfig.model_validate(
        {"output": str(out), "caption": caption.model_dump(), "verify": {"repair_rounds": rounds}}
    )


def _truthful(request: dict[str, Any]) -> str:
    """The rules captioner's answer to the request's first user turn (its prompt)."""
    return rules_answer(request["messages"][:2], None, 0, "x")


def test_rules_captions_pass_and_verdicts_read_back(tmp_path: Path, dask_client: Client) -> None:
    cfg = _run(tmp_path, CaptionConfig())
    run_captions(cfg.caption, cfg.output, dask_client)
    summary = run_verify(cfg, dask_client)
    assert summary.verified == N and summary.passed == N and summary.failed == 0
    verdicts = list(read_verdicts(cfg.output))
    caps = {c.patch_id: c for c in read_captions(cfg.output)}
    assert [v.patch_id for v in verdicts] == list(caps)
    assert all(v.status == "pass" and v.score == 1.0 and v.round == 0 for v in verdicts)
    assert all(v.caption == caps[v.patch_id].caption for v in verdicts)
    report = json.loads((cfg.output / "verify_report.json").read_text())
    assert report["pass_rate_final"] == 1.0


def test_wrong_then_right_is_repaired_in_round_one(tmp_path: Path, dask_client: Client) -> None:
    def responder(request: dict[str, Any]) -> str:
        return WRONG if len(request["messages"]) <= 2 else _truthful(request)

    with FakeOpenAI(responder=responder) as fake:
        caption = CaptionConfig(endpoints=(endpoint(fake.base_url),))
        cfg = _run(tmp_path, caption)
        run_captions(caption, cfg.output, dask_client)
        summary = run_verify(cfg, dask_client)
        sent = len(fake.requests)
        follow_ups = [r.body["messages"] for r in fake.requests if len(r.body["messages"]) > 2]
        # Resumed: every repair request already answered, so nothing is sent again.
        again = run_verify(cfg, dask_client)
        assert len(fake.requests) == sent
    # A random map may hold what WRONG names; every other patch fails, then is repaired.
    bad = N - summary.passed
    assert bad >= N - 3 and summary.repaired == bad and summary.failed == 0
    assert summary.violations_first["hallucinated"] == bad
    assert len(follow_ups) == bad and summary.rounds[0]["sent"] == bad
    correction = follow_ups[0][-1]["content"]
    assert "There is no " in correction and " in this image." in correction
    assert follow_ups[0][-2] == {"role": "assistant", "content": WRONG}
    assert again.repaired == bad
    verdicts = [v for v in read_verdicts(cfg.output) if v.status != "pass"]
    assert len(verdicts) == bad and {v.status for v in verdicts} == {"repaired"}
    assert all(v.round == 1 and v.violations == [] and v.first_violations for v in verdicts)
    assert all(v.caption != WRONG for v in verdicts)
    table = pq.read_table(cfg.output / "verify.parquet")
    assert table.column_names[:8] == [
        "patch_id", "key", "style", "status", "pass", "score", "round", "violations",
    ]  # fmt: skip


def test_still_wrong_goes_to_review_after_the_last_round(
    tmp_path: Path, dask_client: Client
) -> None:
    with FakeOpenAI(responder=lambda request: WRONG) as fake:
        caption = CaptionConfig(endpoints=(endpoint(fake.base_url),))
        cfg = _run(tmp_path, caption, rounds=2)
        run_captions(caption, cfg.output, dask_client)
        summary = run_verify(cfg, dask_client)
        rounds = Counter(len(r.body["messages"]) for r in fake.requests)
    # Each round sends the prompt, the last answer and a follow-up. Round 2's request is round
    # 1's again (same answer, same follow-up), yet it is sent: a round's keys are its own.
    bad = N - summary.passed
    assert rounds == {2: N, 4: 2 * bad}
    assert [r["round"] for r in summary.rounds] == [1, 2]
    assert summary.failed == bad and summary.repaired == 0
    failed = [v for v in read_verdicts(cfg.output) if v.status != "pass"]
    assert len(failed) == bad and all(v.status == "failed" and v.round == 2 for v in failed)


def test_missing_captions_is_named(tmp_path: Path, dask_client: Client) -> None:
    from cenlib.verify import VerifyError

    cfg = RunConfig.model_validate({"output": str(tmp_path / "empty")})
    with pytest.raises(VerifyError, match="run `cen caption CONFIG` first"):
        run_verify(cfg, dask_client)


@pytest.mark.e2e
def test_real_smollm2_answers_are_verified_and_sent_back(
    tmp_path: Path, dask_client: Client
) -> None:
    """SmolLM2-135M behind a real llama.cpp server: its captions are checked, the failing ones
    go back with their follow-ups for one round, and every caption ends with a status."""
    from cenlib.captions import serve_smollm2
    from cenlib.config import EndpointConfig

    n = 4
    with serve_smollm2(log_path=tmp_path / "server.log") as local:
        ep = EndpointConfig(kind="smollm2", base_url=local.base_url, model=local.model)
        caption = CaptionConfig(endpoints=(ep,), max_tokens=160, temperature=0.2)
        out = tmp_path / "run"
        ids = write_prompts(out, n)
        _store(out, ids, label_maps(n))
        cfg = RunConfig.model_validate(
            {"output": str(out), "caption": caption.model_dump(), "verify": {"repair_rounds": 1}}
        )
        run_captions(caption, out, dask_client)
        summary = run_verify(cfg, dask_client)
    verdicts = list(read_verdicts(out))
    assert len(verdicts) == n and summary.verified == n
    assert {v.status for v in verdicts} <= {"pass", "repaired", "failed"}
    assert summary.passed + summary.repaired + summary.failed == n
    sent = n - summary.passed
    if sent:  # a 135M model rarely gets every class and place right the first time
        assert summary.rounds[0]["sent"] == sent
        assert (out / "verify" / "repair-1" / "captions.jsonl").is_file()
    first, final = summary.pass_rate_first, summary.pass_rate_final
    print(f"\nsmollm2: {first:.0%} passed, {final:.0%} after repair")


def test_repairs_are_paid_from_the_run_budget(tmp_path: Path, dask_client: Client) -> None:
    """The budget covers captions and repairs together: with room for about half the repairs,
    the rest are left for a later run and the run directory never spends past the limit."""
    from cenlib.captions import read_responses

    def responder(request: dict[str, Any]) -> str:
        return WRONG if len(request["messages"]) <= 2 else _truthful(request)

    with FakeOpenAI(responder=responder) as fake:
        ep = endpoint(fake.base_url, price_in=1000.0, price_out=1000.0)
        caption = CaptionConfig(endpoints=(ep,), max_tokens=200)
        cfg = _run(tmp_path, caption, rounds=1)
        run_captions(caption, cfg.output, dask_client)
        spent = sum(r.cost or 0.0 for r in read_responses(cfg.output / "responses.jsonl"))
        # One follow-up costs about the prompt, the wrong answer and the follow-up: ~1.5 times
        # a caption's cost. Leave room for a third of them.
        limit = spent * (1 + 0.5 * 1.5 / 3)
        summary = run_verify(cfg, dask_client, max_cost=limit)
    repaired = cfg.output / "verify" / "repair-1" / "responses.jsonl"
    paid = spent + sum(r.cost or 0.0 for r in read_responses(repaired))
    assert paid <= limit + 1e-9
    assert summary.rounds[0]["skipped"] > 0 and summary.repaired < N - summary.passed
    assert summary.repair_cost == pytest.approx(paid - spent, rel=1e-6)
