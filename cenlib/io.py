"""Shared file ground of every stage: atomic writes, stable hashes and the failures table.

The failures table (``<run>/failures.jsonl``) holds one JSON object per tolerated failure, each
with the ``stage`` that recorded it (``search-areas``, ``search``, ``ingest``, ...), the item it
concerns (patch id, item id, asset, href where they apply) and the ``reason``. Each stage owns
its records: :func:`replace_failures` rewrites the lines of the given stages and keeps every
other stage's, so re-running one stage never loses another's records.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FAILURES = "failures.jsonl"


def stable_hash(*parts: Any) -> str:
    """sha256 hex of JSON-able parts (sorted keys): for config hashes, task keys and tokens.

    Same parts, same hash, in any process (unlike ``hash()``, which is salted per process).
    """
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 hex of a file's bytes: a content token that, unlike an mtime, is the same for
    the same content whenever and wherever the file was written."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a file created or renamed in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new,
    never a part: a temporary file in the same directory, fsync'd, renamed over ``path``, and
    the directory fsync'd."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            for chunk in [data] if isinstance(data, bytes) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(out.parent)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """:func:`write_atomic` of UTF-8 text."""
    write_atomic(path, text.encode("utf-8"))


def read_failures(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of a run's failures table, in file order (empty if there is none)."""
    path = Path(run_dir) / FAILURES
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def replace_failures(
    run_dir: Path, stages: Iterable[str], records: Iterable[Mapping[str, Any]] = ()
) -> int:
    """Replace the records of ``stages`` in the failures table by ``records`` (each must name
    one of those stages); keep the other stages' records. Returns the number written."""
    owned = set(stages)
    new = [dict(r) for r in records]
    for r in new:
        if r.get("stage") not in owned:
            raise ValueError(f"failure record of stage {r.get('stage')!r} outside {sorted(owned)}")
    kept = [r for r in read_failures(run_dir) if r.get("stage") not in owned]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(run_dir) / FAILURES, [json.dumps(r).encode() + b"\n" for r in kept + new])
    return len(new)


def clear_failures(run_dir: Path) -> None:
    """Start a run's failures table afresh (a new plan starts the run over)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(run_dir) / FAILURES, b"")
