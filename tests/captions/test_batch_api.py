"""The Batch API mode of the caption stage, over real HTTP against the fake OpenAI server."""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import pytest
from openai_server import FakeBatch, FakeOpenAI, echo_responder, random_line_faults

from cenlib.captions.batch_api import (
    BatchAPIError,
    BatchReport,
    BatchRequest,
    run_batch_api,
    write_batch_files,
)
from cenlib.captions.responses import (
    Response,
    ShardWriter,
    outstanding_dead_letters,
    read_dead_letters,
    read_responses,
    request_key,
    scan_keys,
)

KEY = "sk-canary-batch-4f1d0c"  # must never appear in anything written
PARAMS = {"temperature": 0.2, "max_tokens": 200}


class Crash(Exception):
    """Raised from the progress callback: the process 'dies' just after a step was saved."""


def request(i: int, model: str = "gpt-test", extra: str = "") -> BatchRequest:
    messages = [
        {"role": "system", "content": "Describe the land cover."},
        {"role": "user", "content": f"patch {i}: 40% tree, 60% crop{extra}"},
    ]
    body = {"model": model, "messages": messages, **PARAMS}
    return BatchRequest(request_key(model, messages, PARAMS), f"p{i}", body)


def price(tokens_in: int | None, tokens_out: int | None) -> float | None:
    if tokens_in is None or tokens_out is None:
        return None
    return (tokens_in * 0.075 + tokens_out * 0.3) / 1e6  # a batch price table, USD per token


def client(fake: FakeOpenAI) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0, timeout=5.0)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "work", tmp_path / "responses"


def run(
    fake: FakeOpenAI,
    requests: list[BatchRequest],
    dirs: tuple[Path, Path],
    crash_at: str | None = None,
    events: list[str] | None = None,
    **kw: Any,
) -> BatchReport:
    """run_batch_api with a fast poll; ``crash_at``: raise Crash at the first event so named."""
    log = events if events is not None else []

    def progress(message: str) -> None:
        log.append(message)
        if crash_at is not None and message.startswith(crash_at):
            raise Crash(message)

    with client(fake) as c:
        return run_batch_api(
            c,
            requests,
            dirs[0],
            dirs[1],
            endpoint="openai-batch",
            price=price,
            poll_s=0.005,
            progress=progress,
            **kw,
        )


def uploaded_ids(fake: FakeOpenAI) -> list[list[str]]:
    return [f.custom_ids() for f in fake.uploads()]


def assert_each_answered_once(
    fake: FakeOpenAI, responses: Path, keys: set[str], paid: set[str] | None = None
) -> None:
    """Every key stored once; every key of ``paid`` (default: all) paid once on the server."""
    assert set(fake.answered_per_custom_id()) == (keys if paid is None else paid)
    assert set(fake.answered_per_custom_id().values()) == {1}
    scan = scan_keys(responses)
    assert scan.keys == keys and scan.records == len(keys) and scan.bad == []


# ---------------------------------------------------------------------------------------------
# Input files


def test_write_batch_files_splits_by_count_bytes_and_model(tmp_path: Path) -> None:
    reqs = [request(i) for i in range(7)] + [request(i, model="gpt-other") for i in range(3)]
    paths = write_batch_files(reqs, tmp_path, max_requests=3)
    assert [p.name for p in paths] == [f"requests-{i:03d}.jsonl" for i in range(4)]
    files = [[json.loads(x) for x in p.read_text().splitlines()] for p in paths]
    # models in sorted order, one model a file, input order within a model
    assert [len(f) for f in files] == [3, 3, 3, 1]
    assert [{x["body"]["model"] for x in f} for f in files] == [
        {"gpt-other"},
        {"gpt-test"},
        {"gpt-test"},
        {"gpt-test"},
    ]
    assert [x["custom_id"] for f in files[1:] for x in f] == [r.key for r in reqs[:7]]
    line = files[0][0]
    assert set(line) == {"custom_id", "method", "url", "body"}
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"] == reqs[7].body

    # by bytes: every file within the limit, as many lines as fit
    size = len(reqs[0].line())
    by_bytes = write_batch_files(reqs[:7], tmp_path / "b", max_bytes=2 * size + 10)
    assert [len(p.read_bytes().splitlines()) for p in by_bytes] == [2, 2, 2, 1]
    assert all(p.stat().st_size <= 2 * size + 10 for p in by_bytes)

    # deterministic bytes; stale files of an earlier, longer split removed
    again = write_batch_files(reqs[:7], tmp_path / "b", max_bytes=10 * size)
    assert [p.name for p in again] == ["requests-000.jsonl"]
    assert sorted(x.name for x in (tmp_path / "b").iterdir()) == ["requests-000.jsonl"]
    assert again[0].read_bytes() == b"".join(r.line() for r in reqs[:7])

    with pytest.raises(ValueError, match="given twice"):
        write_batch_files([reqs[0], reqs[0]], tmp_path / "c")
    with pytest.raises(ValueError, match=rf"{reqs[0].key} \(p0\) is \d+ bytes"):
        write_batch_files(reqs[:1], tmp_path / "d", max_bytes=size - 1)


# ---------------------------------------------------------------------------------------------
# The server's Batch API, checked with the SDK


def test_fake_server_validates_input_files_like_the_api() -> None:
    def lines(n: int, **override: Any) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            body = {"model": "m", "messages": [{"role": "user", "content": f"p{i}"}]}
            out.append({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions"})
            out[-1]["body"] = body
        for i, changes in override.items():
            out[int(i[1:])].update(changes)
        return out

    def submit(c: openai.OpenAI, rows: list[Any]) -> Any:
        data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
        f = c.files.create(
            file=("in.jsonl", io.BytesIO(data.encode()), "application/jsonl"), purpose="batch"
        )
        b = c.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert b.status == "validating"
        return c.batches.retrieve(b.id)

    with FakeOpenAI(batch_max_bytes=2_000) as fake, client(fake) as c:
        big = lines(12)  # about 1,300 bytes
        assert submit(c, big).status == "in_progress"
        b = submit(c, lines(20))
        assert b.status == "failed" and b.errors is not None and b.failed_at is not None
        assert [e.code for e in b.errors.data] == ["file_too_large"]

        bad = lines(
            6,
            l1={"method": "GET"},
            l2={"url": "/v1/embeddings"},
            l3={"custom_id": "c0"},
            l4={"body": {"model": "other", "messages": []}},
        )
        bad[5] = "{not json"
        b = submit(c, bad)
        assert b.status == "failed" and b.errors is not None
        assert [(e.line, e.code) for e in b.errors.data] == [
            (2, "invalid_method"),
            (3, "invalid_url"),
            (4, "duplicate_custom_id"),
            (5, "mismatched_model"),
            (6, "invalid_json_line"),
        ]
    # the real limit of 50,000 requests a file
    with FakeOpenAI() as fake, client(fake) as c:
        rows = [
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m"},
            }
            for i in range(50_001)
        ]
        b = submit(c, rows)
        assert b.status == "failed" and b.errors is not None
        assert b.errors.data[0].code == "too_many_requests"
        assert "50000" in str(b.errors.data[0].message)
        assert submit(c, rows[:50_000]).status == "in_progress"

        with pytest.raises(openai.BadRequestError):
            c.batches.create(
                input_file_id=fake.uploads()[0].id,
                endpoint="/v1/chat/completions",
                completion_window="1h",  # type: ignore[arg-type]
            )
        assert fake.errors == []


def test_fake_server_batch_lifecycle_outputs_and_cancel() -> None:
    rows = "".join(
        json.dumps(
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"p{i}"}]},
            }
        )
        + "\n"
        for i in range(4)
    ).encode()
    faults = {"c1": "500", "c2": "error", "c3": "empty_choices"}
    with FakeOpenAI(line_faults=faults, batch_faults=["ok", "hold"]) as fake, client(fake) as c:
        f = c.files.create(
            file=("in.jsonl", io.BytesIO(rows), "application/jsonl"), purpose="batch"
        )
        assert f.purpose == "batch" and f.bytes == len(rows) and f.filename == "in.jsonl"
        assert c.files.content(f.id).content == rows
        b = c.batches.create(
            input_file_id=f.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "x"},
        )
        seen = [b.status]
        while b.status != "completed":
            b = c.batches.retrieve(b.id)
            seen.append(b.status)
        assert seen == ["validating", "in_progress", "finalizing", "completed"]
        assert b.request_counts is not None and b.request_counts.total == 4
        assert (b.request_counts.completed, b.request_counts.failed) == (2, 2)
        assert b.metadata == {"run": "x"} and b.usage is not None and b.usage.input_tokens > 0
        assert b.output_file_id and b.error_file_id
        out = [json.loads(x) for x in c.files.content(b.output_file_id).content.splitlines()]
        err = [json.loads(x) for x in c.files.content(b.error_file_id).content.splitlines()]
        assert [x["custom_id"] for x in out] == ["c0", "c3"]
        assert out[0]["response"]["status_code"] == 200 and out[0]["error"] is None
        body = out[0]["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == echo_responder(
            {"messages": [{"role": "user", "content": "p0"}]}
        )
        assert out[1]["response"]["body"]["choices"] == []
        assert err[0]["custom_id"] == "c1" and err[0]["response"]["status_code"] == 500
        assert err[1]["response"] is None and err[1]["error"]["code"] == "server_error"
        assert fake.answered_per_custom_id() == Counter({"c0": 1})

        held = c.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(3):
            assert c.batches.retrieve(held.id).status in ("in_progress", "validating")
        assert c.batches.cancel(held.id).status == "cancelling"
        assert c.batches.retrieve(held.id).status == "cancelled"
        with pytest.raises(openai.ConflictError):
            c.batches.cancel(held.id)
        assert [x.id for x in c.batches.list()] == [held.id, b.id]
        assert [x.id for x in c.files.list(purpose="batch")] == [f.id]
        assert c.files.delete(f.id).deleted
        with pytest.raises(openai.NotFoundError):
            c.files.retrieve(f.id)
        assert fake.errors == []


# ---------------------------------------------------------------------------------------------
# run_batch_api


def test_happy_path_answers_each_prompt_once(
    dirs: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reqs = [request(i) for i in range(12)]
    # already answered: not sent again
    with ShardWriter(dirs[1], "sync") as w:
        w.append(Response(reqs[0].key, "p0", "sync", "gpt-test", "old", 1, 1, 0.1, 0.0, 1))
    events: list[str] = []
    with FakeOpenAI(api_key=KEY) as fake:
        report = run(fake, [*reqs, reqs[3]], dirs, events=events)  # a key given twice: sent once
        assert report.requested == 12 and report.skipped == 1 and report.answered == 11
        assert report.dead == 0 and report.rounds == 1 and not report.resumed
        assert len(report.uploaded) == 1 and len(report.batches) == 1
        assert uploaded_ids(fake) == [[r.key for r in reqs[1:]]]
        [batch] = fake.batches
        assert batch.status == "completed"
        assert batch.metadata is not None and batch.metadata["cenlib_file"].endswith(".jsonl")
        keys = {r.key for r in reqs}
        assert_each_answered_once(fake, dirs[1], keys, paid=keys - {reqs[0].key})

        got = {r.key: r for r in read_responses(dirs[1] / "shard-batch.jsonl")}
        assert set(got) == {r.key for r in reqs[1:]}
        assert batch.usage is not None
        assert sum(r.tokens_in or 0 for r in got.values()) == batch.usage["input_tokens"]
        assert sum(r.tokens_out or 0 for r in got.values()) == batch.usage["output_tokens"]
        assert report.tokens_in == batch.usage["input_tokens"]
        for r in reqs[1:]:
            resp = got[r.key]
            assert resp.patch_id == r.patch_id and resp.model == "gpt-test"
            assert resp.endpoint == "openai-batch" and resp.attempts == 1
            assert resp.content == echo_responder(r.body)
            assert resp.tokens_in and resp.tokens_out
            assert resp.cost == pytest.approx(price(resp.tokens_in, resp.tokens_out))
        assert report.cost == pytest.approx(sum(r.cost or 0 for r in got.values()))
        assert [e.split(":")[0] for e in events] == [
            "wrote",
            "uploaded",
            "created",
            "poll",
            "poll",
            "poll",
            "downloaded",
            "recorded",
        ]

        # a second run finds everything answered: no call to the server
        calls = len(fake.api_calls)
        again = run(fake, reqs, dirs)
        assert again.skipped == 12 and again.answered == 0 and again.uploaded == []
        assert len(fake.api_calls) == calls

    # no API key in anything written or said
    written = [p for d in dirs for p in d.rglob("*") if p.is_file()]
    assert all(KEY.encode() not in p.read_bytes() for p in written)
    assert KEY not in " ".join(events) and KEY not in caplog.text
    state = json.loads((dirs[0] / "state.json").read_text())
    [run1] = state["runs"]
    assert run1["finished"] and [f["status"] for f in run1["rounds"][0]["files"]] == ["completed"]


def test_split_into_files_by_count_and_bytes(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(10)] + [request(i, model="gpt-mini") for i in range(3)]
    size = len(reqs[0].line())
    with FakeOpenAI() as fake:
        report = run(fake, reqs, dirs, max_requests=3, max_bytes=3 * size - 1)
        # gpt-mini: 3 lines in 2 files (bytes); gpt-test: 10 lines in 5 files (bytes before count)
        files = fake.uploads()
        assert len(files) == len(report.uploaded) == len(fake.batches) == 7
        assert all(len(f.custom_ids()) <= 2 and len(f.data) < 3 * size for f in files)
        ids = [i for f in files for i in f.custom_ids()]
        assert sorted(ids) == sorted(r.key for r in reqs)
        assert all(b.status == "completed" for b in fake.batches)
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_server_limits_refuse_a_file_and_the_next_round_goes_smaller(
    dirs: tuple[Path, Path],
) -> None:
    reqs = [request(i) for i in range(10)]
    # the server takes fewer requests a file than we were told (an org or model limit)
    with FakeOpenAI(batch_max_requests=6) as fake:
        report = run(fake, reqs, dirs, max_requests=10)
        assert [b.status for b in fake.batches] == ["failed", "completed", "completed"]
        assert [len(x) for x in uploaded_ids(fake)] == [10, 5, 5]
        assert report.answered == 10 and report.dead == 0 and report.rounds == 2
        assert {r.attempts for r in read_responses(dirs[1])} == {2}
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_failed_lines_are_resubmitted_alone(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(12)]
    kinds = ["500", "429", "400", "error", "empty_choices", "malformed"]
    failing = {reqs[i].key: kind for i, kind in zip((1, 3, 4, 7, 9, 10), kinds, strict=True)}

    def first_time(custom_id: str, body: dict[str, Any], seen: int) -> str:
        return failing.get(custom_id, "ok") if seen == 0 else "ok"

    with FakeOpenAI(line_faults=first_time) as fake:
        report = run(fake, reqs, dirs)
        first, second = uploaded_ids(fake)
        assert first == [r.key for r in reqs]
        assert second == [r.key for r in reqs if r.key in failing]  # exactly the failed lines
        assert report.rounds == 2 and report.answered == 12 and report.dead == 0
        got = {r.key: r.attempts for r in read_responses(dirs[1])}
        assert got == {r.key: 2 if r.key in failing else 1 for r in reqs}
        # empty choices and malformed bodies were billed by the provider, but never stored
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_dead_letters_after_max_attempts_name_the_error(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(6)]
    always = {reqs[2].key: "500", reqs[4].key: "error"}
    with FakeOpenAI(line_faults=always) as fake:
        report = run(fake, reqs, dirs, max_attempts=3)
        assert report.rounds == 3 and report.answered == 4 and report.dead == 2
        assert [sorted(x) for x in uploaded_ids(fake)[1:]] == [sorted(always)] * 2
        last = fake.batches[-1].id
        dead = {d.key: d for d in read_dead_letters(dirs[1])}
        assert set(dead) == set(always)
        d500, derr = dead[reqs[2].key], dead[reqs[4].key]
        assert d500.attempts == 3 and d500.patch_id == "p2" and d500.endpoint == "openai-batch"
        for d in (d500, derr):
            assert f"batch {last}" in d.error and "run-001/round-3/requests-000.jsonl" in d.error
            assert f"custom_id {d.key}" in d.error and "line " in d.error
        assert "HTTP 500: HTTP 500 (simulated)" in d500.error
        assert "server_error: line failed (simulated)" in derr.error
        assert {d.key for d in outstanding_dead_letters(dirs[1])} == set(always)

        # a later run retries the dead letters (a new run), and pays nothing else again
        fake.line_faults = None
        again = run(fake, reqs, dirs, max_attempts=1)
        assert again.skipped == 4 and again.answered == 2 and not again.resumed
        assert sorted(uploaded_ids(fake)[-1]) == sorted(always)
        assert outstanding_dead_letters(dirs[1]) == []
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_expired_batch_keeps_its_answers_and_resubmits_the_rest(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(8)]
    with FakeOpenAI(batch_faults=["expire"], expire_completed=0.5) as fake:
        report = run(fake, reqs, dirs)
        assert [b.status for b in fake.batches] == ["expired", "completed"]
        assert uploaded_ids(fake)[1] == [r.key for r in reqs[4:]]  # only the unfinished half
        got = {r.key: r.attempts for r in read_responses(dirs[1])}
        assert got == {r.key: 1 if i < 4 else 2 for i, r in enumerate(reqs)}
        assert report.answered == 8 and report.rounds == 2
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_failed_and_cancelled_batches_resubmit_their_lines(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(4)]
    with FakeOpenAI(batch_faults=["fail", "hold"]) as fake:

        def cancel_held(message: str) -> None:
            held = [b for b in fake.batches if b.fault == "hold" and b.status == "in_progress"]
            for b in held:
                with client(fake) as c:
                    c.batches.cancel(b.id)

        events: list[str] = []
        with client(fake) as c:
            report = run_batch_api(
                c,
                reqs,
                dirs[0],
                dirs[1],
                endpoint="openai-batch",
                price=price,
                poll_s=0.005,
                progress=lambda m: (events.append(m), cancel_held(m))[0],
            )
        # round 1 refused as a whole; round 2 goes smaller (2 files), one of them cancelled;
        # round 3 resubmits the cancelled file's lines
        statuses = [b.status for b in fake.batches]
        assert statuses == ["failed", "cancelled", "completed", "completed"]
        keys = [r.key for r in reqs]
        assert uploaded_ids(fake) == [keys, keys[:2], keys[2:], keys[:2]]
        assert report.rounds == 3 and report.answered == 4
        assert {r.key: r.attempts for r in read_responses(dirs[1])} == {
            k: 3 if i < 2 else 2 for i, k in enumerate(keys)
        }
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


STEPS = ["wrote", "uploaded", "created", "poll", "downloaded", "recorded"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("nth", [1, 2])
def test_crash_at_any_step_resumes_without_paying_twice(
    dirs: tuple[Path, Path], step: str, nth: int
) -> None:
    """Two input files; round 2 resubmits two failed lines. Crash at the nth event of a step
    (the nth of 'wrote' is round 2's), then run again."""
    reqs = [request(i) for i in range(6)]
    flaky = {reqs[1].key, reqs[4].key}

    def first_time(custom_id: str, body: dict[str, Any], seen: int) -> str:
        return "500" if custom_id in flaky and seen == 0 else "ok"

    seen: list[str] = []

    def crash(message: str) -> None:
        seen.append(message)
        if sum(m.startswith(step) for m in seen) == nth:
            raise Crash(message)

    with FakeOpenAI(line_faults=first_time) as fake:
        with pytest.raises(Crash), client(fake) as c:
            run_batch_api(
                c,
                reqs,
                dirs[0],
                dirs[1],
                endpoint="e",
                price=price,
                poll_s=0.005,
                progress=crash,
                max_requests=3,
            )
        report = run(fake, reqs, dirs, max_requests=3)
        assert report.resumed
        # 2 files in round 1, 1 in round 2: each uploaded and batched exactly once
        assert [sorted(x) for x in uploaded_ids(fake)] == [
            sorted(r.key for r in reqs[:3]),
            sorted(r.key for r in reqs[3:]),
            sorted(flaky),
        ]
        assert len(fake.batches) == 3
        assert [f.input_file_id for f in fake.batches] == [f.id for f in fake.uploads()]
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})
        got = {r.key: r.attempts for r in read_responses(dirs[1])}
        assert got == {r.key: 2 if r.key in flaky else 1 for r in reqs}
        # and a third run has nothing to do
        calls = len(fake.api_calls)
        assert run(fake, reqs, dirs).answered == 0 and len(fake.api_calls) == calls


def test_lost_responses_are_found_on_the_server_not_repeated(dirs: tuple[Path, Path]) -> None:
    """The server creates the file (or batch) but the answer never arrives: the run looks for
    it before trying again, so nothing is uploaded or created twice."""
    reqs = [request(i) for i in range(4)]
    with FakeOpenAI() as fake:
        fake.lose_responses("POST", "/v1/files")
        fake.lose_responses("POST", "/v1/batches")
        events: list[str] = []
        report = run(fake, reqs, dirs, events=events)
        assert len(fake.uploads()) == 1 and len(fake.batches) == 1
        assert [c.lost for c in fake.calls("POST", "/v1/")] == [True, True]
        assert [e.split(":")[0] for e in events][:3] == ["wrote", "adopted", "adopted"]
        assert report.answered == 4
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_crash_during_an_upload_call_is_recovered_on_the_next_run(
    dirs: tuple[Path, Path],
) -> None:
    """The process dies while an upload is in flight (here: the answer is lost and so is the
    search that follows); the next run finds the upload instead of repeating it."""
    reqs = [request(i) for i in range(4)]
    with FakeOpenAI() as fake:
        fake.lose_responses("POST", "/v1/files")
        fake.lose_responses("GET", "/v1/files")
        with pytest.raises(BatchAPIError, match=r"looking for an earlier upload of run-001"):
            run(fake, reqs, dirs)
        state = json.loads((dirs[0] / "state.json").read_text())
        [f] = state["runs"][0]["rounds"][0]["files"]
        assert f["upload_started_at"] is not None and f["file_id"] is None
        report = run(fake, reqs, dirs)
        assert report.resumed and report.uploaded == [fake.uploads()[0].id]
        assert len(fake.uploads()) == 1 and len(fake.batches) == 1
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_seeded_fraction_of_failures_and_two_models(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(40)] + [request(i, model="gpt-mini") for i in range(20)]
    faults = random_line_faults(0.25, seed=3, kinds=("500", "error", "empty_choices"), times=1)
    with FakeOpenAI(line_faults=faults, polls_per_step=2) as fake:
        report = run(fake, reqs, dirs, max_requests=25)
        failed_first = {line.custom_id for line in fake.batch_lines[:60] if not line.answered}
        assert 5 <= len(failed_first) <= 25
        resubmitted = [i for f in fake.uploads()[3:] for i in f.custom_ids()]
        assert sorted(resubmitted) == sorted(failed_first)
        assert report.answered == 60 and report.rounds == 2
        assert_each_answered_once(fake, dirs[1], {r.key for r in reqs})


def test_errors_name_what_failed(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(3)]
    with (
        FakeOpenAI(api_key="sk-other") as fake,
        pytest.raises(BatchAPIError, match=r"uploading run-001/round-1/requests-000.jsonl"),
    ):
        run(fake, reqs, dirs)
    with pytest.raises(ValueError, match="two different bodies"):
        other = BatchRequest(reqs[0].key, "px", {**reqs[1].body})
        with FakeOpenAI() as fake:
            run(fake, [reqs[0], other], dirs)
    with pytest.raises(ValueError, match="has no 'messages'"):
        BatchRequest(reqs[0].key, "p0", {"model": "m"})


def test_fake_batch_faults_can_be_a_function(dirs: tuple[Path, Path]) -> None:
    reqs = [request(i) for i in range(3)]

    def expire_first(n: int, batch: FakeBatch) -> str:
        return "expire" if n == 0 else "ok"

    with FakeOpenAI(batch_faults=expire_first, expire_completed=0.0) as fake:
        report = run(fake, reqs, dirs)
        assert [b.status for b in fake.batches] == ["expired", "completed"]
        assert report.answered == 3
        assert fake.batches[0].output_file_id is None and fake.batches[0].error_file_id
