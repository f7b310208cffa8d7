"""Durable answer storage: request keys, fsync'd shards that survive SIGKILL, torn tails, writers
in several processes, dead letters, a deterministic deduplicating merge, and a 200k-key scan."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cenlib.captions.responses import (
    DeadLetter,
    DeadLetterWriter,
    Response,
    ShardWriter,
    WriterBusy,
    canonical_json,
    done_keys,
    merge,
    outstanding_dead_letters,
    read_dead_letters,
    read_responses,
    request_key,
    scan_keys,
)

REPO = Path(__file__).resolve().parents[2]

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Describe the land cover."},
    {"role": "user", "content": "Top left: mostly tree cover. Ünïcödé ✓"},
]
PARAMS: dict[str, Any] = {"temperature": 0.7, "max_tokens": 300, "seed": 0}
# Pinned: changing the canonical form would make every stored answer look unanswered.
GOLDEN = "e8a4abec128f517603185d30629970ba176a8e8a7ea74e67ed3bb71c24d9da6e"


def key_of(i: int, model: str = "gpt-test") -> str:
    return request_key(model, [{"role": "user", "content": f"patch {i}"}], {"temperature": 0})


def response(
    i: int, *, content: str | None = None, at: str | None = None, endpoint: str = "e1"
) -> Response:
    extra = {} if at is None else {"finished_at": at}
    return Response(
        key=key_of(i),
        patch_id=f"p{i:06d}",
        endpoint=endpoint,
        model="gpt-test",
        content=f"Caption of patch {i}." if content is None else content,
        tokens_in=120 + i % 7,
        tokens_out=80,
        latency_s=0.25,
        cost=0.00012,
        attempts=1 + i % 3,
        **extra,
    )


# A writer process: appends answers in a loop and prints each key once `append` has returned.
CHILD = r"""
import random, sys
from cenlib.captions.responses import Response, ShardWriter, request_key

directory, writer_id, start, count, big = sys.argv[1:6]
start, count, big = int(start), int(count), big == "1"
rng = random.Random(start)
with ShardWriter(directory, writer_id) as w:
    print("ready", w.repaired, flush=True)
    i = start
    while count < 0 or i < start + count:
        key = request_key("gpt-test", [{"role": "user", "content": f"patch {i}"}],
                          {"temperature": 0})
        size = 8_000_000 if big else 200  # 8 MB: a kill can land inside write()
        w.append(Response(key=key, patch_id=f"p{i:06d}", endpoint=writer_id, model="gpt-test",
                          content=("%s " % writer_id) * (size // (len(writer_id) + 1)),
                          tokens_in=100, tokens_out=50, latency_s=0.1, cost=0.0001,
                          attempts=1))
        print(key, flush=True)
        i += 1
"""


def child(
    tmp: Path, directory: Path, writer_id: str, start: int, count: int, big: bool, out: Any = None
) -> Any:
    script = tmp / "writer_child.py"
    if not script.exists():
        tmp.mkdir(parents=True, exist_ok=True)
        script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, script, directory, writer_id, str(start), str(count), str(int(big))],
        stdout=subprocess.PIPE if out is None else out,
        text=True,
        env=env,
    )


def acked_keys(lines: list[str]) -> set[str]:
    return {s for s in lines if len(s) == 64 and all(c in "0123456789abcdef" for c in s)}


# --------------------------------------------------------------------------------------------
# request keys


def test_request_key_is_the_documented_sha256() -> None:
    payload = {"v": 1, "model": "gpt-test", "messages": MESSAGES, "params": PARAMS}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert request_key("gpt-test", MESSAGES, PARAMS) == expected
    assert canonical_json(payload) == text.encode()
    assert b" " not in canonical_json({"a": [1, 2], "b": {"c": None}})


def test_request_key_ignores_dict_order_and_number_spelling() -> None:
    k = request_key("gpt-test", MESSAGES, PARAMS)
    reordered = [dict(reversed(list(m.items()))) for m in MESSAGES]
    assert request_key("gpt-test", reordered, dict(reversed(list(PARAMS.items())))) == k
    assert request_key("gpt-test", tuple(MESSAGES), PARAMS) == k
    assert request_key("gpt-test", MESSAGES, {**PARAMS, "max_tokens": 300.0}) == k
    # what changes the request changes the key
    others = {
        request_key("gpt-other", MESSAGES, PARAMS),
        request_key("gpt-test", MESSAGES[::-1], PARAMS),
        request_key("gpt-test", MESSAGES, {**PARAMS, "temperature": 0.71}),
        request_key("gpt-test", MESSAGES, {**PARAMS, "n": 1}),
        request_key("gpt-test", MESSAGES[:1], PARAMS),
        request_key("gpt-test", [{**MESSAGES[0], "content": "describe the land cover."}], {}),
    }
    assert k not in others and len(others) == 6
    # image parts are just more JSON
    img = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,A"}}]}]
    assert len(request_key("gpt-4o", img, {})) == 64


def test_request_key_refuses_what_json_cannot_say() -> None:
    with pytest.raises(ValueError):
        request_key("m", MESSAGES, {"temperature": float("nan")})
    with pytest.raises(TypeError):
        request_key("m", [{1: "x"}], {})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        request_key("m", MESSAGES, {"stop": {"a", "b"}})
    with pytest.raises(ValueError):
        request_key("", MESSAGES, {})


def test_request_key_is_stable_across_processes() -> None:
    code = (
        "import json, sys; from cenlib.captions.responses import request_key; "
        "m, p = json.loads(sys.argv[1]); print(request_key('gpt-test', m, p))"
    )
    arg = json.dumps([MESSAGES, PARAMS])
    seen = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", code, arg], env=env, capture_output=True, text=True, check=True
        )
        seen.add(out.stdout.strip())
    assert seen == {request_key("gpt-test", MESSAGES, PARAMS)} == {GOLDEN}


# --------------------------------------------------------------------------------------------
# records and writers


def test_records_round_trip_and_are_validated(tmp_path: Path) -> None:
    r = response(3, content='Line one.\nLine "two" \u2013 caf\u00e9 \ud83c')  # lone surrogate too
    line = r.to_line()
    assert line.startswith(b'{"key":"' + r.key.encode() + b'","v":1,')
    assert line.endswith(b"}\n") and line.count(b"\n") == 1 and line.isascii()
    assert list(json.loads(line))[-1] == "content"
    assert Response.from_dict(json.loads(line)) == r
    bad: dict[str, Any] = {k: v for k, v in json.loads(line).items() if k != "v"}
    for field, value in [
        ("key", "x" * 64),
        ("attempts", 0),
        ("tokens_in", -1),
        ("tokens_out", True),
        ("latency_s", float("inf")),
        ("cost", -0.1),
        ("finished_at", "yesterday"),
        ("content", None),
    ]:
        with pytest.raises(ValueError):
            Response(**{**bad, field: value})
    with pytest.raises(ValueError):
        Response.from_dict({**json.loads(line), "v": 2})
    with pytest.raises(ValueError):
        Response.from_dict({k: v for k, v in json.loads(line).items() if k != "cost"})
    # unknown fields from a later schema are ignored
    assert Response.from_dict({**json.loads(line), "extra": 1}) == r


def test_append_is_fsynced_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_write, real_fsync = os.write, os.fsync

    def write(fd: int, b: Any) -> int:
        calls.append("write")
        return real_write(fd, b)

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    with ShardWriter(tmp_path, "w0") as w:
        calls.clear()
        w.append(response(1))
        assert calls == ["write", "fsync"]
        calls.clear()
        w.append_many([response(i) for i in range(2, 12)])
        assert calls == ["write", "fsync"]  # group commit: one write, one fsync
        assert w.count == 11
    assert (tmp_path / "shard-w0.jsonl").read_bytes().count(b"\n") == 11


def test_one_writer_per_shard_and_valid_ids(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "task-1") as w:
        with pytest.raises(WriterBusy):
            ShardWriter(tmp_path, "task-1")
        with ShardWriter(tmp_path, "task-2"):  # another id is fine
            pass
        w.append(response(1))
    with ShardWriter(tmp_path, "task-1") as w:  # released on close: resume the shard
        w.append(response(2))
    assert done_keys(tmp_path) == {key_of(1), key_of(2)}
    for wid in ["", "../x", "a/b", ".hidden", "a b", "x" * 201]:
        with pytest.raises(ValueError):
            ShardWriter(tmp_path, wid)
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.append(response(3))


def test_a_failed_write_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    with ShardWriter(tmp_path, "w") as w:
        w.append(response(1))

        def half_then_fail(fd: int, b: Any) -> int:
            if len(b) > 50:
                return real_write(fd, bytes(b[: len(b) // 2]))
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_fail)
        with pytest.raises(OSError, match="No space"):
            w.append(response(2))
        monkeypatch.setattr(os, "write", real_write)
        w.append(response(3))
    bad: list[Any] = []
    assert done_keys(tmp_path, bad=bad) == {key_of(1), key_of(3)} and bad == []

    def no_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with ShardWriter(tmp_path, "w") as w:
        monkeypatch.setattr(os, "fsync", no_fsync)
        with pytest.raises(OSError, match="Input/output"):
            w.append(response(4))
        monkeypatch.undo()
        with pytest.raises(OSError, match="unusable"):  # the page cache is no longer trusted
            w.append(response(5))


# --------------------------------------------------------------------------------------------
# torn tails and SIGKILL


def test_torn_tail_is_skipped_reported_and_cut_by_the_next_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ShardWriter(tmp_path, "w") as w:
        w.append_many([response(i) for i in range(3)])
    shard = tmp_path / "shard-w.jsonl"
    clean = shard.read_bytes()
    torn = response(3).to_line()[:-40]  # the line a crash cut short
    with open(shard, "ab") as f:
        f.write(torn)
    scan = scan_keys(tmp_path)
    assert scan.keys == {key_of(i) for i in range(3)} and scan.records == 3
    [b] = scan.bad
    assert b.torn and b.line == 4 and b.offset == len(clean) and b.size == len(torn)
    with caplog.at_level(logging.WARNING, logger="cenlib.captions.responses"):
        assert done_keys(tmp_path) == scan.keys
    assert "shard-w.jsonl:4" in caplog.text and "torn" in caplog.text
    bad: list[Any] = []
    assert [r.key for r in read_responses(tmp_path, bad=bad)] == [key_of(i) for i in range(3)]
    assert [x.torn for x in bad] == [True]
    # a writer reopening the shard cuts the fragment, so its first line is not glued to it
    with ShardWriter(tmp_path, "w") as w:
        assert w.repaired == len(torn)
        w.append(response(3))
    scan = scan_keys(tmp_path)
    assert scan.keys == {key_of(i) for i in range(4)} and scan.bad == []


def test_corrupt_lines_never_crash_a_reader(tmp_path: Path) -> None:
    shard = tmp_path / "shard-x.jsonl"
    good = [response(i).to_line() for i in range(4)]
    # a fragment glued to a whole record (a foreign writer that did not cut it), a NUL run
    # (power loss), garbage, another JSON value, a record of a later schema, a re-spaced record
    respaced = (json.dumps(json.loads(good[3]), indent=None) + "\n").encode()
    shard.write_bytes(
        good[0]
        + good[1][:70]
        + good[2]
        + b"\x00" * 300
        + b"\n"
        + b"not json\n"
        + b"[1, 2]\n"
        + good[0].replace(b'"v":1', b'"v":9')
        + respaced
        + b"\xff\xfe\n"
    )
    bad: list[Any] = []
    assert done_keys(tmp_path, bad=bad) == {key_of(i) for i in (0, 2, 3)}  # 1 was torn
    assert [b.line for b in bad] == [2, 3, 4, 5, 6, 8]
    assert all(not b.torn for b in bad) and "fragment before a record" in bad[0].reason
    assert [r.key for r in read_responses(shard, bad=[])] == [key_of(i) for i in (0, 2, 3)]


def _kill_rounds(tmp_path: Path, rounds: int, big: bool) -> dict[str, int]:
    """Run a writer, SIGKILL it while it appends, check, resume its shard; repeat."""
    d = tmp_path / "responses"
    rng = random.Random(5)
    keys: set[str] = set()
    acked_total = torn = repaired = unacked = 0
    expected_cut = 0
    for r in range(rounds):
        p = child(tmp_path, d, "task-7", start=r * 1_000_000, count=-1, big=big)
        assert p.stdout is not None
        first = p.stdout.readline().split()
        assert first[0] == "ready"
        assert int(first[1]) == expected_cut  # the torn tail the last kill left, cut on open
        repaired += int(first[1])
        lines = [p.stdout.readline().strip() for _ in range(rng.randint(1, 4) if big else 30)]
        assert all(lines), "writer died on its own"
        time.sleep(rng.random() * (0.08 if big else 0.01))
        os.kill(p.pid, signal.SIGKILL)  # mid-loop: inside write(), fsync() or print()
        lines += p.stdout.read().split()  # printed before the kill: acknowledged too
        assert p.wait() == -signal.SIGKILL
        acked = acked_keys(lines)
        bad: list[Any] = []
        before, keys = keys, done_keys(d, bad=bad)
        assert acked <= keys, "an acknowledged answer was lost"
        assert len(keys - before - acked) <= 1  # at most the one fsync'd but not yet printed
        assert len(bad) <= 1  # at most the line being written, at the very end of the shard
        for b in bad:
            assert b.torn and b.offset + b.size == (d / "shard-task-7.jsonl").stat().st_size
        expected_cut = bad[0].size if bad else 0
        torn += len(bad)
        acked_total += len(acked)
        unacked += len(keys - before - acked)
    return {"acked": acked_total, "unacked": unacked, "torn": torn, "repaired": repaired}


@pytest.mark.slow
def test_sigkill_while_appending_loses_nothing_acknowledged(tmp_path: Path) -> None:
    t = time.perf_counter()
    small = _kill_rounds(tmp_path / "small", rounds=4, big=False)
    # 8 MB records: a kill often lands inside write(), which then stops short and
    # leaves a torn tail (about 4 rounds in 10 here); the next writer cuts it off
    big = _kill_rounds(tmp_path / "big", rounds=10, big=True)
    shutil.rmtree(tmp_path / "big")  # some 250 MB
    print(f"\nSIGKILL rounds: small {small}, big {big}, {time.perf_counter() - t:.1f} s")


def test_sigkill_after_a_partial_write_reports_the_torn_tail(tmp_path: Path) -> None:
    d = tmp_path / "responses"
    code = (
        "import os, sys, time\n"
        "from cenlib.captions.responses import ShardWriter, Response\n"
        "w = ShardWriter(sys.argv[1], 'w')\n"
        f"w.append(Response.from_dict({json.loads(response(1).to_line())!r}))\n"
        f"os.write(w._fd, {response(2).to_line()[:-100]!r})  # a write the kill interrupts\n"
        "print('acked', flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, env=env)
    assert p.stdout is not None and p.stdout.readline() == b"acked\n"
    p.send_signal(signal.SIGKILL)
    p.wait()
    bad: list[Any] = []
    assert done_keys(d, bad=bad) == {key_of(1)}
    [b] = bad
    assert b.torn and b.line == 2


# --------------------------------------------------------------------------------------------
# concurrent writers, dead letters, merge


def test_two_writer_processes_in_one_directory(tmp_path: Path) -> None:
    d = tmp_path / "responses"
    n = 1500
    t = time.perf_counter()
    logs = [tmp_path / "a.out", tmp_path / "b.out"]  # files: a full pipe would block a writer
    with open(logs[0], "w") as fa, open(logs[1], "w") as fb:
        procs = [
            child(tmp_path, d, "task-a", start=0, count=n, big=False, out=fa),
            child(tmp_path, d, "task-b", start=1000, count=n, big=False, out=fb),  # 500 overlap
        ]
    counts: list[int] = []
    while any(p.poll() is None for p in procs):  # a reader scanning while both append
        bad: list[Any] = []
        counts.append(len(done_keys(d, bad=bad)))
        assert all(b.torn for b in bad)
        time.sleep(0.01)
    assert [p.wait() for p in procs] == [0, 0]
    outs = [f.read_text().split() for f in logs]
    elapsed = time.perf_counter() - t
    assert counts == sorted(counts)  # keys only ever appear
    acked = [acked_keys(o) for o in outs]
    assert [len(a) for a in acked] == [n, n]
    bad = []
    keys = done_keys(d, bad=bad)
    assert bad == [] and keys == acked[0] | acked[1] == {key_of(i) for i in range(2500)}
    print(f"\n2 writers x {n} fsync'd appends in {elapsed:.2f} s, {len(counts)} scans meanwhile")

    rep = merge(d, tmp_path / "merged.jsonl")
    assert (rep.shards, rep.records, rep.written) == (2, 2 * n, 2500)
    assert len(rep.duplicates) == 500 and not any(x.same_content for x in rep.duplicates)
    merged = list(read_responses(tmp_path / "merged.jsonl"))
    assert [r.key for r in merged] == sorted(keys)
    by_key = {r.key: r for r in merged}
    first: dict[str, datetime] = {}
    for r in read_responses(d):
        at = datetime.fromisoformat(r.finished_at)
        first[r.key] = min(at, first.get(r.key, at))
    for dup in rep.duplicates:  # the answer that finished first is kept
        kept = by_key[dup.key]
        assert datetime.fromisoformat(kept.finished_at) == first[dup.key]
        assert dup.kept.startswith(f"shard-{kept.endpoint}.jsonl:")


def test_merge_first_answer_wins_and_is_deterministic(tmp_path: Path) -> None:
    t0, t1, t2 = (f"2025-03-01T12:00:0{s}.000000+00:00" for s in (1, 2, 3))
    a, b = tmp_path / "a", tmp_path / "b"
    # the same answers written to two directories in opposite orders, by differently named tasks
    plan = {
        "x": [response(1, at=t2, content="late"), response(2, at=t1), response(3, at=t0)],
        "y": [response(1, at=t0, content="early"), response(4, at=t1)],
        "z": [response(3, at=t0, content="tie: shard z loses to x")],
    }
    for d, names in ((a, ["x", "y", "z"]), (b, ["z", "y", "x"])):
        for name in names:
            with ShardWriter(d, name) as w:
                for r in plan[name][:: 1 if d == a else -1]:
                    w.append(r)
    ra, rb = merge(a, tmp_path / "ma.jsonl"), merge(b, tmp_path / "mb.jsonl")
    assert (tmp_path / "ma.jsonl").read_bytes() == (tmp_path / "mb.jsonl").read_bytes()
    kept = [(x.key, x.kept.split(":")[0]) for x in ra.duplicates]
    assert kept == [(x.key, x.kept.split(":")[0]) for x in rb.duplicates]
    got = {r.key: r.content for r in read_responses(tmp_path / "ma.jsonl")}
    assert got[key_of(1)] == "early"  # finished first, though in a later shard
    assert got[key_of(3)] == "Caption of patch 3."  # same time: shard x before shard z
    assert [(d.key, d.kept, d.dropped) for d in ra.duplicates] == sorted(
        [
            (key_of(1), "shard-y.jsonl:1", "shard-x.jsonl:1"),
            (key_of(3), "shard-x.jsonl:3", "shard-z.jsonl:1"),
        ]
    )
    # patch order given: records follow it; unknown patches go last, by key
    order = ["p000004", "p000002", "p000001", "p000004"]
    rep = merge(a, tmp_path / "mo.jsonl", order=order)
    pids = [r.patch_id for r in read_responses(tmp_path / "mo.jsonl")]
    assert pids == ["p000004", "p000002", "p000001", "p000003"] and rep.unordered == 1
    # atomic: no temporary file is left, and an existing output is replaced whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "ma.jsonl",
        "mb.jsonl",
        "mo.jsonl",
    ]
    rep2 = merge(a, tmp_path / "mo.jsonl")
    assert rep2.written == 4 and [r.key for r in read_responses(tmp_path / "mo.jsonl")] == sorted(
        got
    )


def test_merge_failure_keeps_the_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    with ShardWriter(d, "w") as w:
        w.append(response(1))
    out = tmp_path / "merged.jsonl"
    out.write_bytes(b"old\n")

    def boom(*args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        merge(d, out)
    monkeypatch.undo()
    assert out.read_bytes() == b"old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "merged.jsonl",
        "r",
    ]


def test_dead_letters(tmp_path: Path) -> None:
    with DeadLetterWriter(tmp_path, "task-1") as w:
        w.append(DeadLetter(key_of(1), "p000001", "e1", "RateLimitError: 429", 5, "2025-01-01"))
        w.append(DeadLetter(key_of(1), "p000001", "e2", "APITimeoutError", 5, "2025-01-02"))
        w.append(DeadLetter(key_of(2), "p000002", "e1", "JSONDecodeError: Expecting", 3))
        with pytest.raises(TypeError):
            w.append(response(9))  # type: ignore[arg-type]
    with open(tmp_path / "dead-task-1.jsonl", "ab") as f:
        f.write(b'{"key":"0')  # torn
    with ShardWriter(tmp_path, "task-2") as s:  # a later run answered patch 2
        s.append(response(2))
    bad: list[Any] = []
    letters = read_dead_letters(tmp_path, bad=bad)
    assert [x.endpoint for x in letters] == ["e1", "e2", "e1"] and [b.torn for b in bad] == [True]
    assert done_keys(tmp_path) == {key_of(2)}  # dead letters are not answers
    still = outstanding_dead_letters(tmp_path, bad=[])
    assert [(x.key, x.endpoint, x.error, x.attempts) for x in still] == [
        (key_of(1), "e2", "APITimeoutError", 5)
    ]


# --------------------------------------------------------------------------------------------
# scale


@pytest.mark.slow
def test_done_keys_over_200k_records(tmp_path: Path) -> None:
    d = tmp_path / "responses"
    n, shards = 200_000, 50
    caption = (
        "The image shows a landscape dominated by tree cover, with a moderate amount of "
        "grassland in the top right and scattered developed area along the bottom edge. "
    ) * 4  # ~650 characters, a chatearthnet-3.5 caption's size
    keys = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(n)]
    t = time.perf_counter()
    per = n // shards
    for s in range(shards):
        with ShardWriter(d, f"task-{s:03d}") as w:
            for lo in range(s * per, (s + 1) * per, 1000):
                w.append_many(
                    Response(k, f"p{i:06d}", "e1", "gpt-test", caption, 500, 150, 1.5, 3e-4, 1)
                    for i, k in enumerate(keys[lo : lo + 1000], lo)
                )
    written = time.perf_counter() - t
    size = sum(p.stat().st_size for p in d.iterdir())
    t = time.perf_counter()
    got = done_keys(d)
    scan_s = time.perf_counter() - t
    assert len(got) == n and got == set(keys)
    # the full parse, for comparison (merge and read_responses use it)
    t = time.perf_counter()
    full = sum(1 for _ in read_responses(d))
    full_s = time.perf_counter() - t
    assert full == n
    # single fsync'd appends, as the pool makes them (one per answer)
    with ShardWriter(d, "single") as w:
        t = time.perf_counter()
        for i in range(300):
            w.append(Response(keys[i], "p", "e1", "gpt-test", caption, 1, 1, 0.1, 0.0, 1))
        single = 300 / (time.perf_counter() - t)
    print(
        f"\n{n} records in {shards} shards ({size / 1e6:.0f} MB) written in {written:.1f} s; "
        f"done_keys {scan_s:.2f} s; full parse {full_s:.2f} s; "
        f"{single:.0f} single fsync'd appends/s"
    )
    shutil.rmtree(d)


def test_writers_in_threads_share_one_shard_safely(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "w") as w:

        def work(lo: int) -> None:
            for i in range(lo, lo + 200):
                w.append(response(i))

        ts = [threading.Thread(target=work, args=(k * 200,)) for k in range(4)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
    bad: list[Any] = []
    assert done_keys(tmp_path, bad=bad) == {key_of(i) for i in range(800)} and bad == []
