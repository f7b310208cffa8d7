"""The decisions database: append-only history, latest wins, concurrent writers lose nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cenlib.review import REVIEW_DB, Decision, ReviewDBError, decision_history, read_decisions
from cenlib.review.db import record

WRITER = """
import sys
from cenlib.review.db import record
run, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.stdin.readline()  # start together
for i in range(n):
    record(run, f"p{i % 7}", f"k{i}", ("accept", "reject", "edit")[i % 3], who, f"{who} {i}")
"""


def test_history_is_kept_and_the_latest_decision_wins(tmp_path: Path) -> None:
    assert read_decisions(tmp_path) == {} and decision_history(tmp_path) == []
    a = record(tmp_path, "p1", "k1", "accept", "ann")
    b = record(tmp_path, "p2", "k2", "reject", "bob")
    c = record(tmp_path, "p1", "k1", "edit", "bob", "Water covers the image.")
    assert (tmp_path / REVIEW_DB).is_file()
    assert [d.seq for d in (a, b, c)] == [1, 2, 3]
    assert decision_history(tmp_path) == [a, b, c]
    assert decision_history(tmp_path, "p1") == [a, c]
    latest = read_decisions(tmp_path)
    assert latest == {"p1": c, "p2": b}
    assert latest["p1"].text == "Water covers the image." and latest["p1"].reviewer == "bob"
    assert isinstance(c, Decision) and c.time.endswith("+00:00")
    # A reject after the edit wins again, and drops any text given with it.
    d = record(tmp_path, "p1", "k1", "reject", "ann", "ignored")
    assert read_decisions(tmp_path)["p1"] == d and d.text is None
    assert len(decision_history(tmp_path)) == 4
    with sqlite3.connect(tmp_path / REVIEW_DB) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_bad_decisions_are_refused_with_the_patch_named(tmp_path: Path) -> None:
    with pytest.raises(ReviewDBError, match="decision 'maybe' for patch p1"):
        record(tmp_path, "p1", "k1", "maybe", "ann")
    with pytest.raises(ReviewDBError, match="edit of patch p1 needs the edited"):
        record(tmp_path, "p1", "k1", "edit", "ann", "   ")
    assert decision_history(tmp_path) == []


def test_a_foreign_file_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / REVIEW_DB).write_bytes(b"not a database at all, just bytes" * 100)
    with pytest.raises(ReviewDBError, match=r"is not a review database.*move it away"):
        read_decisions(tmp_path)


def test_two_processes_and_two_threads_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    n = 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), who, str(n)],
            stdin=subprocess.PIPE,
            text=True,
        )
        for who in ("proc-a", "proc-b")
    ]

    def write(who: str) -> None:
        for i in range(n):
            record(tmp_path, f"p{i % 7}", f"k{i}", "accept", who)

    threads = [threading.Thread(target=write, args=(f"thread-{t}",)) for t in "cd"]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.close()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    history = decision_history(tmp_path)
    assert len(history) == 4 * n
    assert [d.seq for d in history] == list(range(1, 4 * n + 1))
    for who in ("proc-a", "proc-b", "thread-c", "thread-d"):
        mine = [d for d in history if d.reviewer == who]
        assert [d.key for d in mine] == [f"k{i}" for i in range(n)], who  # each in its order
    # Latest per patch is the last row written for it, whoever wrote it.
    latest = read_decisions(tmp_path)
    assert set(latest) == {f"p{i}" for i in range(7)}
    for pid, d in latest.items():
        assert d == [h for h in history if h.patch_id == pid][-1]
