"""Review decisions in SQLite: ``<run>/review.sqlite``, one append-only table.

Every decision is a new row (history is never rewritten); the latest row of a patch wins. The
database runs in WAL mode with a busy timeout, and each write is one short ``BEGIN IMMEDIATE``
transaction, so several reviewers (threads of one server, or several ``cen review`` processes
on the same run) write at once and lose nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from cenlib.errors import CenError

REVIEW_DB = "review.sqlite"
KINDS = ("accept", "reject", "edit")
Kind = Literal["accept", "reject", "edit"]
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    patch_id  TEXT NOT NULL,
    key       TEXT NOT NULL,
    decision  TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'edit')),
    text      TEXT,
    reviewer  TEXT NOT NULL,
    time      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_patch ON decisions (patch_id, seq);
"""
_COLUMNS = "seq, patch_id, key, decision, text, reviewer, time"


class ReviewDBError(CenError, ValueError):
    """A decision that cannot be stored, or a ``review.sqlite`` this tool did not write."""


@dataclass(frozen=True)
class Decision:
    """One reviewer's decision on one patch's caption.

    ``key``: the request key of the caption decided on (a re-verified caption has a new key, so
    an old decision is recognisably stale). ``text``: the edited caption (``edit`` only).
    ``time``: UTC, ISO 8601. ``seq``: the row's order in the history (higher = later).
    """

    patch_id: str
    key: str
    decision: Kind
    text: str | None
    reviewer: str
    time: str
    seq: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "patch_id": self.patch_id,
            "key": self.key,
            "decision": self.decision,
            "text": self.text,
            "reviewer": self.reviewer,
            "time": self.time,
            "seq": self.seq,
        }


def db_path(run_dir: Path | str) -> Path:
    """``run_dir/review.sqlite``, or ``run_dir`` itself when it names a file."""
    p = Path(run_dir)
    return p / REVIEW_DB if p.is_dir() else p


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection in autocommit mode (transactions are explicit), WAL, busy timeout."""
    try:
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.OperationalError as e:
        raise ReviewDBError(f"cannot open {path}: {e}; is the run directory writable?") from e
    with closing(con):
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _setup(con, path)
        yield con


def _setup(con: sqlite3.Connection, path: Path) -> None:
    """WAL mode and the schema. Switching to WAL takes a lock that the busy timeout does not
    wait for when another connection is creating the file at the same moment: retried."""
    for attempt in range(50):
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode = WAL")  # persistent: once per file
            con.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as e:
            if not _locked(e) or attempt == 49:
                raise ReviewDBError(f"cannot open the review database {path}: {e}") from e
            time.sleep(0.05 + 0.01 * attempt)
        except sqlite3.DatabaseError as e:
            raise ReviewDBError(
                f"{path} is not a review database ({e}); move it away and review again"
            ) from e


def _locked(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def record(
    run_dir: Path | str,
    patch_id: str,
    key: str,
    decision: str,
    reviewer: str,
    text: str | None = None,
) -> Decision:
    """Append one decision and return it (with its ``seq`` and time)."""
    if decision not in KINDS:
        raise ReviewDBError(f"decision {decision!r} for patch {patch_id}: expected one of {KINDS}")
    if decision == "edit" and not (text and text.strip()):
        raise ReviewDBError(f"an edit of patch {patch_id} needs the edited, non-empty text")
    if decision != "edit":
        text = None
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    with connect(db_path(run_dir)) as con:
        for attempt in range(5):
            try:
                con.execute("BEGIN IMMEDIATE")
                cur = con.execute(
                    "INSERT INTO decisions (patch_id, key, decision, text, reviewer, time) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (patch_id, key, decision, text, reviewer, stamp),
                )
                con.execute("COMMIT")
                break
            except sqlite3.OperationalError as e:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                # busy_timeout covers ordinary contention; a lock still held after it is retried
                if not _locked(e) or attempt == 4:
                    raise ReviewDBError(
                        f"cannot store the decision on patch {patch_id} in {db_path(run_dir)}: {e}"
                    ) from e
                time.sleep(0.1 * (attempt + 1))
    seq = cur.lastrowid or 0
    return Decision(patch_id, key, cast(Kind, decision), text, reviewer, stamp, seq)


def decision_history(run_dir: Path | str, patch_id: str | None = None) -> list[Decision]:
    """Every decision in the order made (of one patch, or of all); empty without a database."""
    path = db_path(run_dir)
    if not path.is_file():
        return []
    query = f"SELECT {_COLUMNS} FROM decisions"
    args: tuple[str, ...] = ()
    if patch_id is not None:
        query += " WHERE patch_id = ?"
        args = (patch_id,)
    with connect(path) as con:
        rows = con.execute(query + " ORDER BY seq", args).fetchall()
    return [_decision(r) for r in rows]


def read_decisions(run_dir: Path | str) -> dict[str, Decision]:
    """The latest decision of every reviewed patch, by patch id."""
    path = db_path(run_dir)
    if not path.is_file():
        return {}
    with connect(path) as con:
        rows = con.execute(
            f"SELECT {_COLUMNS} FROM decisions WHERE seq IN "
            "(SELECT MAX(seq) FROM decisions GROUP BY patch_id) ORDER BY seq"
        ).fetchall()
    return {r[1]: _decision(r) for r in rows}


def _decision(row: tuple[object, ...]) -> Decision:
    seq, patch_id, key, decision, text, reviewer, stamp = row
    return Decision(
        str(patch_id),
        str(key),
        cast(Kind, decision),
        None if text is None else str(text),
        str(reviewer),
        str(stamp),
        int(cast(int, seq)),
    )
