"""Durable, append-only storage of model answers, so that no answered request is paid for twice.

A run keeps its answers in one directory (``<run>/responses/``)::

    shard-<writer_id>.jsonl   answers (:class:`Response`), appended by one writer only
    dead-<writer_id>.jsonl    dead letters (:class:`DeadLetter`): what still failed at the end

Request key
    :func:`request_key` is the sha256 (lowercase hex) of the canonical JSON (:func:`canonical_json`)
    of ``{"v": 1, "model": model, "messages": messages, "params": params}``: keys sorted, no
    whitespace (``separators=(",", ":")``), ASCII only (every non-ASCII character escaped as
    ``\\uXXXX``), NaN and infinities refused, and every float that is a whole number written as
    an integer (``temperature=1`` and ``temperature=1.0`` are the same request). Only ``str``
    mapping keys are accepted and tuples are lists. The endpoint is not part of the key on
    purpose: two endpoints serving the same model give the same answer's worth, so failing over
    does not pay again. ``params`` must hold what changes the answer (temperature, max_tokens,
    seed, ...), never transport options (timeouts, keys, URLs). The ``v`` in the payload changes
    only if this definition ever does.

Writers
    Every Dask task opens its own :class:`ShardWriter` (a unique ``writer_id``: the task key, a
    batch id, ...). The writer holds an exclusive ``flock`` on its file for its whole life, so a
    second writer with the same id fails with :class:`WriterBusy` instead of interleaving (on a
    local file system; over NFS, keep ids unique). Each
    :meth:`ShardWriter.append` writes whole lines with ``os.write`` on an ``O_APPEND`` descriptor
    (no user-space buffer) and then ``os.fsync``: when it returns, the answer survives the
    process being killed (the bytes are in the kernel) and the machine losing power (they are on
    the disk). :meth:`ShardWriter.append_many` does the same for several answers with a single
    ``fsync``. The file's directory entry is fsync'd when the file is created.

    A crash can leave the last line torn (written in part, never acknowledged). Readers skip it
    and report it (:class:`BadLine`); a writer reopening the shard cuts it off before appending,
    so a new record never continues a torn one. A failed write is cut off the same way, and a
    failed ``fsync`` leaves the writer unusable (the page cache can no longer be trusted).

Readers
    :func:`done_keys` (every key of every shard, by a cheap fixed-prefix parse: each record line
    starts with ``{"key":"<64 hex>",``) is what a run skips on start. :func:`read_responses`
    parses and validates whole records; :func:`merge` writes one file of unique keys atomically
    and reports duplicates; :func:`read_dead_letters` and :func:`outstanding_dead_letters` read
    the dead letters. Readers never fail on a bad line: they skip it and report it (in the
    ``bad`` list given, else as a logged warning). Reading while writers append is safe: a line
    being written shows as a torn tail, which is not yet acknowledged anyway.

Record (one JSON object a line, keys in this order, ASCII, compact)::

    {"key": sha256 hex, "v": 1, "patch_id": str, "endpoint": str, "model": str,
     "tokens_in": int|null, "tokens_out": int|null, "latency_s": float, "cost": float|null,
     "attempts": int, "finished_at": ISO 8601 with offset, "content": str}

``cost`` is in the currency of the endpoint's price table (USD); ``null`` tokens or cost mean the
server did not say. ``attempts`` counts every try of the request, the answered one included.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Self, TypeVar

from cenlib.io import fsync_dir, write_atomic

log = logging.getLogger(__name__)

KEY_VERSION: Final = 1  # the "v" inside the hashed payload of request_key
SCHEMA: Final = 1  # the "v" of every stored line
SHARD_PREFIX: Final = "shard-"
DEAD_PREFIX: Final = "dead-"
SUFFIX: Final = ".jsonl"

_WRITER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
_KEY = re.compile(r"[0-9a-f]{64}\Z")
_HEX = b"0123456789abcdef"
_PREFIX = b'{"key":"'  # every stored line starts with this; the key comes first
_KEY_START = len(_PREFIX)
_KEY_END = _KEY_START + 64
_AFTER_KEY = b'","v":%d,' % SCHEMA
_AFTER_END = _KEY_END + len(_AFTER_KEY)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Request keys


def _canonical(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: {obj!r} has no JSON form")
        return int(obj) if obj.is_integer() else float(obj)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: mapping key {k!r} is not a str")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    if isinstance(obj, list | tuple):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: {type(obj).__name__} is not JSON")


def canonical_json(obj: Any) -> bytes:
    """The canonical JSON bytes of ``obj`` that :func:`request_key` hashes (see the module doc)."""
    text = json.dumps(
        _canonical(obj, "$"),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return text.encode("ascii")


def request_key(
    model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> str:
    """sha256 hex of ``canonical_json({"v": 1, "model": ..., "messages": ..., "params": ...})``.

    The same request gives the same key in any process, whatever the dicts' insertion order.
    """
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty str")
    if isinstance(messages, str | bytes | Mapping):
        raise TypeError("messages must be a sequence of message dicts")
    if not isinstance(params, Mapping):
        raise TypeError("params must be a mapping")
    payload = {"v": KEY_VERSION, "model": model, "messages": list(messages), "params": params}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


# ---------------------------------------------------------------------------------------------
# Records


def _check(cls: str, name: str, value: object, kind: type | tuple[type, ...], opt: bool) -> None:
    if value is None and opt:
        return
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{cls}.{name}: {value!r} is not {kind}")


def _check_str(cls: str, name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{cls}.{name}: {value!r} is not a str")


def _check_count(cls: str, name: str, value: object, opt: bool, low: int = 0) -> None:
    _check(cls, name, value, int, opt)
    if isinstance(value, int) and value < low:
        raise ValueError(f"{cls}.{name}: {value} < {low}")


def _check_amount(cls: str, name: str, value: object, opt: bool) -> None:
    _check(cls, name, value, (int, float), opt)
    if isinstance(value, int | float) and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{cls}.{name}: {value!r} is not a finite amount >= 0")


def _check_common(cls: str, key: object, finished_at: object) -> None:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"{cls}.key: {key!r} is not a lowercase sha256 hex digest")
    _check_str(cls, "finished_at", finished_at)
    try:
        _parse_time(str(finished_at))
    except ValueError:
        raise ValueError(f"{cls}.finished_at: {finished_at!r} is not ISO 8601") from None


class _Record:
    """Shared JSON-line encoding of the two record kinds."""

    __slots__ = ()
    KIND: ClassVar[str]
    key: str  # declared by the dataclasses below

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "v": SCHEMA}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name != "key":
                out[f.name] = getattr(self, f.name)
        return out

    def to_line(self) -> bytes:
        """One stored line: compact ASCII JSON, ``key`` first, ending in a newline."""
        text = json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return text.encode("ascii") + b"\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """The record of a parsed line; ``ValueError`` when it is not one (unknown keys are
        ignored, so that a later schema can add fields)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"not a JSON object: {type(d).__name__}")
        if d.get("v") != SCHEMA:
            raise ValueError(f"unsupported schema version {d.get('v')!r}")
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        required = [
            f.name
            for f in fields(cls)  # type: ignore[arg-type]
            if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [n for n in required if n not in d]
        if missing:
            raise ValueError(f"missing fields {missing}")
        try:
            return cls(**{n: d[n] for n in names if n in d})
        except TypeError as e:
            raise ValueError(str(e)) from None


@dataclass(frozen=True, slots=True)
class Response(_Record):
    """One answered request, as stored (see the module doc for the line format)."""

    KIND: ClassVar[str] = "response"

    key: str
    patch_id: str
    endpoint: str
    model: str
    content: str
    tokens_in: int | None
    tokens_out: int | None
    latency_s: float
    cost: float | None
    attempts: int
    finished_at: str = field(default_factory=_now)
    finish_reason: str | None = None  # the endpoint's own ("stop", "length"); None: not given

    def __post_init__(self) -> None:
        c = "Response"
        _check_common(c, self.key, self.finished_at)
        for name in ("patch_id", "endpoint", "model", "content"):
            _check_str(c, name, getattr(self, name))
        _check_count(c, "tokens_in", self.tokens_in, opt=True)
        _check_count(c, "tokens_out", self.tokens_out, opt=True)
        _check_amount(c, "latency_s", self.latency_s, opt=False)
        _check_amount(c, "cost", self.cost, opt=True)
        _check_count(c, "attempts", self.attempts, opt=False, low=1)
        if self.finish_reason is not None:
            _check_str(c, "finish_reason", self.finish_reason)

    def to_dict(self) -> dict[str, Any]:
        # content last: a person reading the file sees the accounting first
        d = _Record.to_dict(self)
        d["content"] = d.pop("content")
        return d


@dataclass(frozen=True, slots=True)
class DeadLetter(_Record):
    """A request that still failed after its last attempt: why, where, how often."""

    KIND: ClassVar[str] = "dead letter"

    key: str
    patch_id: str
    endpoint: str
    error: str
    attempts: int
    finished_at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        c = "DeadLetter"
        _check_common(c, self.key, self.finished_at)
        for name in ("patch_id", "endpoint", "error"):
            _check_str(c, name, getattr(self, name))
        _check_count(c, "attempts", self.attempts, opt=False, low=1)


R = TypeVar("R", bound=_Record)

# ---------------------------------------------------------------------------------------------
# Writers


class WriterBusy(RuntimeError):
    """Another live writer holds this shard (two writers were given the same id)."""


def _cut_torn_tail(fd: int) -> int:
    """Truncate a last line that has no newline (a torn write); the number of bytes cut."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    end = size
    cut = 0
    while end > 0:
        start = max(0, end - (1 << 16))
        chunk = os.pread(fd, end - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            cut = start + i + 1
            break
        end = start
    os.ftruncate(fd, cut)
    os.fsync(fd)
    return size - cut


class _Appender:
    PREFIX: ClassVar[str]

    def __init__(self, directory: str | os.PathLike[str], writer_id: str) -> None:
        if not isinstance(writer_id, str) or not _WRITER_ID.match(writer_id):
            raise ValueError(
                f"writer id {writer_id!r}: use 1-200 characters of A-Z a-z 0-9 . _ - "
                "(not starting with . _ or -)"
            )
        self.directory = Path(directory)
        self.writer_id = writer_id
        self.path = self.directory / f"{self.PREFIX}{writer_id}{SUFFIX}"
        new_dirs: list[Path] = []
        p = self.directory.resolve()
        while not p.is_dir():
            new_dirs.append(p)
            p = p.parent
        self.directory.mkdir(parents=True, exist_ok=True)
        for p in reversed(new_dirs):  # make the new directories' entries durable too
            fsync_dir(p.parent)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        new_file = not self.path.exists()
        fd = os.open(self.path, flags, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WriterBusy(f"{self.path} is held by another writer") from None
            #: bytes of a torn last line cut off on opening (0 after a clean close)
            self.repaired = _cut_torn_tail(fd)
            if self.repaired:
                log.warning("%s: cut a torn last line of %d bytes", self.path, self.repaired)
            if new_file:
                fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._lock = threading.Lock()
        self._broken: str | None = None
        #: records appended (and fsync'd) through this writer
        self.count = 0

    def _append_bytes(self, data: bytes, n: int) -> None:
        with self._lock:
            if self._fd < 0:
                raise ValueError(f"{self.path}: writer is closed")
            if self._broken is not None:
                raise OSError(
                    f"{self.path}: writer unusable after an earlier failure: {self._broken}"
                )
            if not data:
                return
            start = os.fstat(self._fd).st_size  # we hold the lock: nobody else appends
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except BaseException as e:
                try:  # never leave a partial line for the next record to continue
                    os.ftruncate(self._fd, start)
                except OSError as e2:
                    self._broken = f"write failed ({e!r}) and the cut failed ({e2!r})"
                raise
            try:
                os.fsync(self._fd)
            except BaseException as e:
                self._broken = f"fsync failed ({e!r})"
                raise
            self.count += n

    def close(self) -> None:
        """Release the shard (idempotent). Everything appended is already on disk."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # also drops the flock
                self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, count={self.count})"


class ShardWriter(_Appender):
    """Appends :class:`Response` lines to ``<directory>/shard-<writer_id>.jsonl``.

    :meth:`append` returns only once the line is written and fsync'd. Thread-safe; one writer per
    id at a time (:class:`WriterBusy` otherwise). Reopening an id resumes its shard.
    """

    PREFIX: ClassVar[str] = SHARD_PREFIX

    def append(self, response: Response) -> None:
        """Write one answer durably (``os.write`` + ``os.fsync``) before returning."""
        if not isinstance(response, Response):
            raise TypeError(f"expected a Response, got {type(response).__name__}")
        self._append_bytes(response.to_line(), 1)

    def append_many(self, responses: Iterable[Response]) -> None:
        """Write several answers with one ``fsync`` (group commit): all are durable on return."""
        rs = list(responses)
        for r in rs:
            if not isinstance(r, Response):
                raise TypeError(f"expected a Response, got {type(r).__name__}")
        self._append_bytes(b"".join(r.to_line() for r in rs), len(rs))


class DeadLetterWriter(_Appender):
    """Appends :class:`DeadLetter` lines to ``<directory>/dead-<writer_id>.jsonl`` (as
    :class:`ShardWriter` does answers)."""

    PREFIX: ClassVar[str] = DEAD_PREFIX

    def append(self, letter: DeadLetter) -> None:
        """Write one dead letter durably before returning."""
        if not isinstance(letter, DeadLetter):
            raise TypeError(f"expected a DeadLetter, got {type(letter).__name__}")
        self._append_bytes(letter.to_line(), 1)


# ---------------------------------------------------------------------------------------------
# Readers


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line a reader skipped: ``torn`` (the file's last line, without its newline: a write
    that never completed) or ``corrupt`` (a complete line that is no valid record)."""

    path: str
    line: int  # 1-based
    offset: int  # byte offset of the line in the file
    size: int  # bytes
    reason: str

    @property
    def torn(self) -> bool:
        return self.reason == "torn"

    def __str__(self) -> str:
        return f"{self.path}:{self.line} (byte {self.offset}, {self.size} bytes): {self.reason}"


@dataclass(frozen=True, slots=True)
class KeyScan:
    """What :func:`scan_keys` found."""

    keys: set[str]
    records: int  # valid record lines (a key stored twice counts twice)
    shards: int
    bad: list[BadLine]


def _files(directory: str | os.PathLike[str], prefix: str) -> list[Path]:
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.name.startswith(prefix) and p.name.endswith(SUFFIX))


def _lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, line with its newline) of a file, streamed, up to the size the
    file had when opened: a line a writer is appending meanwhile ends the scan as a torn tail
    (its rest, arriving later, must not be read as a line of its own)."""
    offset = 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for n, line in enumerate(f, 1):
            if offset + len(line) >= size:
                yield n, offset, line[: size - offset]
                return
            yield n, offset, line
            offset += len(line)


def _fast_key(line: bytes) -> str | None:
    """The key of a line as our writers write it, without parsing the JSON; None if unsure."""
    if (
        line.startswith(_PREFIX)
        and line[_KEY_END:_AFTER_END] == _AFTER_KEY
        and line.endswith(b"}\n")
        and not line[_KEY_START:_KEY_END].strip(_HEX)
        and line.find(_PREFIX, 1) < 0  # an unescaped record start occurs only at offset 0
    ):
        return line[_KEY_START:_KEY_END].decode("ascii")
    return None


def _parse(
    kind: type[R], path: Path, n: int, offset: int, line: bytes, bad: list[BadLine]
) -> R | None:
    """The record of one line, or None with the reason appended to ``bad``.

    A complete line holding a torn fragment followed by a whole record (a foreign writer that
    did not cut the fragment) yields the record and reports the fragment.
    """
    if not line.endswith(b"\n"):
        bad.append(BadLine(str(path), n, offset, len(line), "torn"))
        return None
    try:
        return kind.from_dict(json.loads(line))
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = f"corrupt: {e}"
    i = line.rfind(_PREFIX)
    if i > 0:
        with contextlib.suppress(ValueError):
            rec = kind.from_dict(json.loads(line[i:]))
            bad.append(BadLine(str(path), n, offset, i, "corrupt: torn fragment before a record"))
            return rec
    bad.append(BadLine(str(path), n, offset, len(line), reason[:300]))
    return None


def _report(bad: list[BadLine], into: list[BadLine] | None) -> None:
    if into is not None:
        into.extend(bad)
    else:
        for b in bad:
            log.warning("skipped %s", b)


def scan_keys(directory: str | os.PathLike[str]) -> KeyScan:
    """Every key of every shard of ``directory`` with the lines skipped (none of them fatal).

    Lines as :class:`ShardWriter` writes them are recognised by their fixed prefix without
    parsing the JSON; any other line is parsed in full. A missing directory has no keys.
    """
    keys: set[str] = set()
    bad: list[BadLine] = []
    records = 0
    shards = _files(directory, SHARD_PREFIX)
    add = keys.add
    for path in shards:
        for n, offset, line in _lines(path):
            k = _fast_key(line)
            if k is None:
                rec = _parse(Response, path, n, offset, line, bad)
                if rec is None:
                    continue
                k = rec.key
            add(k)
            records += 1
    return KeyScan(keys, records, len(shards), bad)


def done_keys(directory: str | os.PathLike[str], *, bad: list[BadLine] | None = None) -> set[str]:
    """Every request key answered in any shard of ``directory``: what a run must not send again.

    Skipped lines (a torn tail after a crash, ...) go to ``bad`` when given, else to the log.
    """
    scan = scan_keys(directory)
    _report(scan.bad, bad)
    return scan.keys


@dataclass(frozen=True, slots=True)
class Located(Generic[R]):
    record: R
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{Path(self.path).name}:{self.line}"


def _read_located(kind: type[R], paths: Sequence[Path], bad: list[BadLine]) -> Iterator[Located[R]]:
    for path in paths:
        for n, offset, line in _lines(path):
            rec = _parse(kind, path, n, offset, line, bad)
            if rec is not None:
                yield Located(rec, str(path), n)


def _paths(source: str | os.PathLike[str], prefix: str) -> list[Path]:
    p = Path(source)
    return [p] if p.is_file() else _files(p, prefix)


def read_responses(
    source: str | os.PathLike[str], *, bad: list[BadLine] | None = None
) -> Iterator[Response]:
    """Every valid :class:`Response` of a directory's shards (in shard-name, then line order) or
    of one file (a shard or a :func:`merge` output). Skipped lines as in :func:`done_keys`."""
    found: list[BadLine] = []
    try:
        for loc in _read_located(Response, _paths(source, SHARD_PREFIX), found):
            yield loc.record
    finally:
        _report(found, bad)


def read_dead_letters(
    source: str | os.PathLike[str], *, bad: list[BadLine] | None = None
) -> list[DeadLetter]:
    """Every valid :class:`DeadLetter` of a directory's ``dead-*.jsonl`` files (or of one file)."""
    found: list[BadLine] = []
    out = [loc.record for loc in _read_located(DeadLetter, _paths(source, DEAD_PREFIX), found)]
    _report(found, bad)
    return out


def outstanding_dead_letters(
    directory: str | os.PathLike[str], *, bad: list[BadLine] | None = None
) -> list[DeadLetter]:
    """The dead letters still unanswered: the latest one per key whose key no shard holds (a
    later run may have answered it), sorted by key."""
    found: list[BadLine] = []
    done = scan_keys(directory)
    found.extend(done.bad)
    latest: dict[str, DeadLetter] = {}
    for letter in read_dead_letters(directory, bad=found):
        if letter.key in done.keys:
            continue
        old = latest.get(letter.key)
        if old is None or _parse_time(letter.finished_at) >= _parse_time(old.finished_at):
            latest[letter.key] = letter
    _report(found, bad)
    return [latest[k] for k in sorted(latest)]


# ---------------------------------------------------------------------------------------------
# Merge


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A key answered more than once: the answer kept and one dropped (``file:line``)."""

    key: str
    kept: str
    dropped: str
    same_content: bool


@dataclass(frozen=True, slots=True)
class MergeReport:
    path: str  # the merged file
    shards: int
    records: int  # valid records read
    written: int  # unique keys written
    duplicates: list[Duplicate]
    bad: list[BadLine]
    unordered: int  # records whose patch id was not in ``order`` (written last, by key)


def _rank(loc: Located[Response]) -> tuple[datetime, str, int]:
    return (_parse_time(loc.record.finished_at), Path(loc.path).name, loc.line)


def merge(
    directory: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    order: Sequence[str] | None = None,
) -> MergeReport:
    """Write every answered key of ``directory``'s shards once to ``out_path``, atomically.

    First answer wins: of the records of one key, the one that finished first, ties broken by
    shard file name, then line. Output order: by key; or, given ``order`` (patch ids), by the
    position of each record's patch id there, then by key, with records whose patch id is not
    in ``order`` last (by key, counted in ``unordered``). The output is the same set of lines
    whatever the order the shards were written in: the merge is deterministic. It is written to
    a temporary file in the same directory, fsync'd and renamed over ``out_path`` (and the
    directory fsync'd), so a reader sees the old file or the new one, never a part. Merge once
    the writers are done: lines still being written are skipped as torn.
    """
    out = Path(out_path)
    shards = _files(directory, SHARD_PREFIX)
    bad: list[BadLine] = []
    best: dict[str, Located[Response]] = {}
    others: dict[str, list[Located[Response]]] = {}
    records = 0
    for loc in _read_located(Response, shards, bad):
        records += 1
        key = loc.record.key
        old = best.get(key)
        if old is None:
            best[key] = loc
            continue
        if _rank(loc) < _rank(old):
            best[key], loc = loc, old
        others.setdefault(key, []).append(loc)
    duplicates = [
        Duplicate(k, best[k].where, o.where, o.record.content == best[k].record.content)
        for k in sorted(others)
        for o in sorted(others[k], key=_rank)
    ]
    keys = sorted(best)
    unordered = 0
    if order is not None:
        pos: dict[str, int] = {}
        for i, pid in enumerate(order):
            pos.setdefault(pid, i)
        last = len(pos) + len(order)
        unordered = sum(1 for k in keys if best[k].record.patch_id not in pos)
        keys.sort(key=lambda k: pos.get(best[k].record.patch_id, last))  # stable: then by key
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, (best[k].record.to_line() for k in keys))
    for b in bad:
        log.warning("merge skipped %s", b)
    if duplicates:
        log.info("merge: %d duplicate answers dropped (first answer kept)", len(duplicates))
    return MergeReport(str(out), len(shards), records, len(keys), duplicates, bad, unordered)
