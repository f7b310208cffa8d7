"""Caption requests through the OpenAI Batch API, resumable at every step.

The Batch API answers within 24 hours at half the price of the synchronous endpoint. One call of
:func:`run_batch_api` takes chat requests (:class:`BatchRequest`) to answers in a responses
directory (:mod:`cenlib.captions.responses`), the same store the synchronous pool writes:

1. skip every request whose key is answered already (:func:`~.responses.done_keys`); send
   identical keys once;
2. write the rest as JSONL input files (:func:`write_batch_files`: ``custom_id`` = request key,
   one model a file, at most ``max_requests`` lines and ``max_bytes`` bytes a file);
3. upload each file (``purpose="batch"``), create one batch a file, poll until every batch is
   terminal, download its output and error files;
4. record each answered line as a :class:`~.responses.Response` (``attempts`` = the round);
5. resubmit what failed (error-file lines, non-200 lines, empty choices, malformed bodies, lines
   of a failed, expired or cancelled batch that have no answer) as a new round holding only
   them, up to ``max_attempts`` rounds (a file the API refused as a whole, e.g. over a size or
   enqueued-token limit, makes the next round's files at most half its size); what still fails
   becomes a :class:`~.responses.DeadLetter` whose error names the batch, the file, the line and
   the custom id at fault, and the error code and message.

Work directory (one per run of a stage; a second process using it gets
:class:`BatchStateBusy`)::

    state.json                          the state (below), replaced atomically after each step
    run-001/round-1/requests-000.jsonl  input files of a round (write_batch_files)
    run-001/round-1/requests-000.output.jsonl / .errors.jsonl   what the batch returned
    run-001/round-1/patches.json        {key: patch_id} of the round's requests

State file (JSON; no API key or URL is ever written)::

    {"version": 1, "runs": [{
        "run": 1, "token": "<12 hex>", "started_at": ISO 8601, "finished": false,
        "rounds": [{
            "round": 1, "done": false, "max_requests": int, "max_bytes": int,
            "files": [{
                "name": "run-001/round-1/requests-000.jsonl", "model": str,
                "requests": int, "bytes": int, "sha256": hex,
                "upload_name": "<token>-run-001-round-1-requests-000.jsonl",
                "upload_started_at": epoch|null, "file_id": str|null,
                "create_started_at": epoch|null, "batch_id": str|null,
                "status": batch status|null, "output_file_id": str|null,
                "error_file_id": str|null, "errors": [str], "created_at": epoch|null,
                "ended_at": epoch|null, "downloaded": bool, "recorded": bool}]}]}]}

Resuming: each step is recorded before the next begins, so a re-run after a crash picks up where
the state says: files written but not uploaded are uploaded; an upload or batch creation that was
started but never recorded (the process died during the call) is looked for on the server first
(``files.list`` by the upload's name, ``batches.list`` by input file and the run token in the
batch's metadata) and adopted when found, never made twice. The same search runs when such a call
loses its answer (a dropped connection, a 5xx, a 429): the OpenAI API takes no idempotency key,
so these two calls go without the SDK's blind retries. Batches in flight are polled again;
downloads are kept; recording skips every key already answered. A run that finished starts anew
only for keys still unanswered (a re-run retries dead letters).

Progress events (``progress(message)``; each is sent just after the state recording that step was
saved, so a callback that raises simulates a crash at that point): ``wrote: ...``,
``uploaded: ...``, ``created: ...``, ``poll: ...``, ``downloaded: ...``, ``recorded: ...``,
``adopted: ...``, ``dead: ...``, ``skip: ...``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import openai
from openai.types import Batch

from cenlib.captions.responses import (
    DeadLetter,
    DeadLetterWriter,
    Response,
    ShardWriter,
    done_keys,
)
from cenlib.errors import CenError
from cenlib.io import write_atomic

log = logging.getLogger(__name__)

CHAT_URL: Final = "/v1/chat/completions"
MAX_REQUESTS: Final = 50_000
"""The Batch API's limit of requests in one input file."""
MAX_BYTES: Final = 200 * 1024**2
"""The Batch API's limit of bytes in one input file."""
TERMINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})
STATE_VERSION: Final = 1
STATE_NAME: Final = "state.json"
_INPUT = re.compile(r"requests-\d{3,}\.jsonl\Z")
_SEARCH_SLACK_S = 3600.0  # how far before a lost call's start a server-side search looks

_CALL_TRIES = 4  # tries of an upload or a batch creation whose outcome was unknown
# What may have reached the server although the client saw no answer (no SDK retries for these:
# the OpenAI API takes no idempotency key, so a blind retry of a lost creation pays twice).
_UNKNOWN_OUTCOME = (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)

Price = Callable[[int | None, int | None], float | None]
T = TypeVar("T")


class BatchAPIError(CenError, RuntimeError):
    """A step of a batch run failed; the message names the file, batch and line at fault."""


class BatchStateBusy(BatchAPIError):
    """Another process is running batches from the same work directory."""


@dataclass(frozen=True)
class BatchRequest:
    """One chat request: ``body`` = ``{"model", "messages", ...params}`` as sent; ``key`` its
    :func:`~.responses.request_key` (the batch line's ``custom_id``)."""

    key: str
    patch_id: str
    body: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.body, dict):
            raise TypeError(f"request {self.key} ({self.patch_id}): body is not a dict")
        if not isinstance(self.body.get("model"), str) or not self.body["model"]:
            raise ValueError(f"request {self.key} ({self.patch_id}): body has no 'model'")
        if not isinstance(self.body.get("messages"), list):
            raise ValueError(f"request {self.key} ({self.patch_id}): body has no 'messages' list")

    @property
    def model(self) -> str:
        return str(self.body["model"])

    def line(self) -> bytes:
        """The request as one line of a batch input file (compact JSON, UTF-8, newline)."""
        obj = {"custom_id": self.key, "method": "POST", "url": CHAT_URL, "body": self.body}
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8") + b"\n"


@dataclass(frozen=True)
class BatchReport:
    """What one :func:`run_batch_api` call did."""

    requested: int
    """Distinct request keys given."""
    skipped: int
    """Of those, answered before this call."""
    answered: int
    """Answers recorded by this call."""
    dead: int
    """Dead letters written by this call."""
    rounds: int
    """Rounds run or resumed by this call (over every run it touched)."""
    uploaded: list[str]
    """Ids of the files this call uploaded (or adopted after a crash)."""
    batches: list[str]
    """Ids of the batches this call created (or adopted after a crash)."""
    resumed: bool
    """Whether an unfinished run was picked up."""
    tokens_in: int
    tokens_out: int
    cost: float | None
    """Sum of the answers' costs (None when the price function knew none)."""


# ---------------------------------------------------------------------------------------------
# Input files


@dataclass(frozen=True)
class _Written:
    path: Path
    model: str
    requests: int
    bytes: int
    sha256: str


def _write_files(
    requests: Iterable[BatchRequest], directory: Path, max_requests: int, max_bytes: int
) -> list[_Written]:
    if max_requests < 1 or max_bytes < 1:
        raise ValueError(f"max_requests ({max_requests}) and max_bytes ({max_bytes}) must be >= 1")
    by_model: dict[str, list[bytes]] = {}
    seen: set[str] = set()
    for r in requests:
        if r.key in seen:
            raise ValueError(f"request key {r.key} ({r.patch_id}) given twice: custom ids repeat")
        seen.add(r.key)
        line = r.line()
        if len(line) > max_bytes:
            raise ValueError(
                f"request {r.key} ({r.patch_id}) is {len(line)} bytes as a batch line, more than "
                f"max_bytes={max_bytes}"
            )
        by_model.setdefault(r.model, []).append(line)
    chunks: list[tuple[str, list[bytes]]] = []
    for model in sorted(by_model):
        chunk: list[bytes] = []
        size = 0
        for line in by_model[model]:
            if chunk and (len(chunk) >= max_requests or size + len(line) > max_bytes):
                chunks.append((model, chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        chunks.append((model, chunk))
    directory.mkdir(parents=True, exist_ok=True)
    out: list[_Written] = []
    for i, (model, lines) in enumerate(chunks):
        data = b"".join(lines)
        path = directory / f"requests-{i:03d}.jsonl"
        write_atomic(path, data)
        out.append(_Written(path, model, len(lines), len(data), hashlib.sha256(data).hexdigest()))
    keep = {w.path.name for w in out}
    for stale in directory.iterdir():
        if _INPUT.match(stale.name) and stale.name not in keep:
            stale.unlink()
    return out


def write_batch_files(
    requests: Iterable[BatchRequest],
    directory: str | os.PathLike[str],
    *,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
) -> list[Path]:
    """Write ``requests`` as Batch API input files ``directory/requests-NNN.jsonl``.

    Each line is ``{"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body":
    body}``. Files hold one model each (the API's rule), models in sorted order, requests in the
    given order, each file at most ``max_requests`` lines and ``max_bytes`` bytes. Same requests,
    same files, byte for byte; older ``requests-*.jsonl`` files beyond the new ones are removed.
    Raises ``ValueError`` for a key given twice or a single request larger than ``max_bytes``.
    """
    return [w.path for w in _write_files(requests, Path(directory), max_requests, max_bytes)]


def _read_input(path: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> the parsed line of one of our input files, in file order."""
    out: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                obj = json.loads(line)
                out[obj["custom_id"]] = obj
            except (ValueError, KeyError, TypeError) as e:
                raise BatchAPIError(f"{path}:{n}: not a batch request line ({e})") from e
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class _FileState:
    name: str  # input file, relative to the work directory
    model: str
    requests: int
    bytes: int
    sha256: str
    upload_name: str
    upload_started_at: float | None = None
    file_id: str | None = None
    create_started_at: float | None = None
    batch_id: str | None = None
    status: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[str] = field(default_factory=list)
    created_at: int | None = None
    ended_at: int | None = None
    downloaded: bool = False
    recorded: bool = False

    def where(self) -> str:
        return f"batch {self.batch_id} (input {self.name}, file {self.file_id})"


@dataclass
class _Round:
    round: int
    max_requests: int
    max_bytes: int
    files: list[_FileState]
    done: bool = False


@dataclass
class _Run:
    run: int
    token: str
    started_at: str
    rounds: list[_Round]
    finished: bool = False

    @property
    def dir(self) -> str:
        return f"run-{self.run:03d}"


@dataclass
class _State:
    version: int = STATE_VERSION
    runs: list[_Run] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _State:
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {d.get('version')!r}")
        runs = []
        for r in d["runs"]:
            rounds = [
                _Round(**{**x, "files": [_FileState(**f) for f in x["files"]]}) for x in r["rounds"]
            ]
            runs.append(_Run(**{**r, "rounds": rounds}))
        return cls(STATE_VERSION, runs)


# ---------------------------------------------------------------------------------------------
# Reading what a batch returned


@dataclass
class _Outcome:
    answers: dict[str, Response]
    failures: dict[str, str]  # key -> why


def _completion(body: Any) -> tuple[str, int | None, int | None] | str:
    """(content, prompt tokens, completion tokens) of a chat.completion body, or why not."""
    if not isinstance(body, dict):
        return "malformed body: not a JSON object"
    choices = body.get("choices")
    if not isinstance(choices, list):
        return "malformed body: no 'choices' list"
    if not choices:
        return "empty choices"
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content:
        reason = first.get("finish_reason") if isinstance(first, dict) else None
        return f"no content in the first choice (finish_reason {reason!r})"
    usage = body.get("usage")
    usage = usage if isinstance(usage, dict) else {}

    def count(name: str) -> int | None:
        v = usage.get(name)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None

    return content, count("prompt_tokens"), count("completion_tokens")


def _line_failure(obj: dict[str, Any]) -> str | None:
    """Why a result line is not an answer (None: it may be one; check its body)."""
    error = obj.get("error")
    if error:
        if isinstance(error, dict):
            return f"{error.get('code')}: {error.get('message')}"
        return f"error: {error!r}"
    response = obj.get("response")
    if not isinstance(response, dict):
        return "no response"
    status = response.get("status_code")
    if status != 200:
        body = response.get("body")
        err = body.get("error") if isinstance(body, dict) else None
        msg = err.get("message") if isinstance(err, dict) else body
        code = err.get("code") if isinstance(err, dict) else None
        return f"HTTP {status}" + (f" {code}" if code else "") + f": {msg}"
    return None


def _iso(epoch: int | None) -> str:
    t = datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)
    return t.isoformat(timespec="microseconds")


# ---------------------------------------------------------------------------------------------
# The runner


def _lock(work_dir: Path) -> int:
    fd = os.open(work_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BatchStateBusy(f"{work_dir} is in use by another batch run") from None
    return fd


class _Runner:
    def __init__(
        self,
        client: openai.OpenAI,
        work_dir: Path,
        responses_dir: Path,
        shard: ShardWriter,
        dead: DeadLetterWriter,
        *,
        endpoint: str,
        price: Price,
        poll_s: float,
        max_attempts: int,
        progress: Callable[[str], None] | None,
        max_requests: int,
        max_bytes: int,
    ) -> None:
        self.client = client
        self.once = client.with_options(max_retries=0)  # for calls that must not repeat blindly
        self.work_dir = work_dir
        self.responses_dir = responses_dir
        self.shard = shard
        self.dead_writer = dead
        self.endpoint = endpoint
        self.price = price
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.progress = progress
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.state_path = work_dir / STATE_NAME
        self.state = self._load()
        self.done: set[str] = set()
        self._outcomes: dict[str, _Outcome] = {}
        self._patches: dict[str, dict[str, str]] = {}
        # counters for the report
        self.answered = self.dead = self.rounds = self.tokens_in = self.tokens_out = 0
        self.cost: float | None = None
        self.uploaded: list[str] = []
        self.batches: list[str] = []

    # -- state ------------------------------------------------------------------------------

    def _load(self) -> _State:
        if not self.state_path.exists():
            return _State()
        try:
            return _State.from_dict(json.loads(self.state_path.read_bytes()))
        except (ValueError, KeyError, TypeError) as e:
            raise BatchAPIError(
                f"{self.state_path}: unreadable batch state ({e}); it records uploads and batches "
                "already paid for: repair it rather than delete it"
            ) from e

    def _save(self) -> None:
        data = json.dumps(asdict(self.state), indent=1, ensure_ascii=True).encode("ascii")
        write_atomic(self.state_path, data)

    def _say(self, message: str) -> None:
        log.info("%s", message)
        if self.progress is not None:
            self.progress(message)

    def _refresh_done(self) -> None:
        self.done |= done_keys(self.responses_dir)

    def _patch_ids(self, run: _Run, rnd: _Round) -> dict[str, str]:
        path = self.work_dir / run.dir / f"round-{rnd.round}" / "patches.json"
        key = str(path)
        if key not in self._patches:
            self._patches[key] = json.loads(path.read_bytes())
        return self._patches[key]

    # -- the run ----------------------------------------------------------------------------

    def run(self, requests: Sequence[BatchRequest]) -> BatchReport:
        unique: dict[str, BatchRequest] = {}
        for r in requests:
            old = unique.setdefault(r.key, r)
            if old is not r and old.body != r.body:
                raise ValueError(
                    f"request key {r.key} is given with two different bodies "
                    f"(patches {old.patch_id} and {r.patch_id})"
                )
        self._refresh_done()
        skipped = sum(1 for k in unique if k in self.done)
        resumed = False
        attempted: set[str] = set()
        runs = self.state.runs
        if runs and not runs[-1].finished:
            resumed = True
            self._say(f"skip: resuming run {runs[-1].run} from {self.state_path.name}")
            self._finish(runs[-1])
            attempted = set(self._patch_ids(runs[-1], runs[-1].rounds[0]))
            self._refresh_done()
        todo = [r for k, r in unique.items() if k not in self.done and k not in attempted]
        if todo:
            run = _Run(len(runs) + 1, secrets.token_hex(6), _iso(None), [])
            self._new_round(run, 1, todo, self.max_requests, self.max_bytes)
            self._finish(run)
        elif not resumed:
            self._say(f"skip: all {len(unique)} requests are answered already")
        return BatchReport(
            requested=len(unique),
            skipped=skipped,
            answered=self.answered,
            dead=self.dead,
            rounds=self.rounds,
            uploaded=self.uploaded,
            batches=self.batches,
            resumed=resumed,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            cost=self.cost,
        )

    def _new_round(
        self, run: _Run, n: int, requests: Sequence[BatchRequest], max_requests: int, max_bytes: int
    ) -> _Round:
        directory = self.work_dir / run.dir / f"round-{n}"
        written = _write_files(requests, directory, max_requests, max_bytes)
        write_atomic(
            directory / "patches.json",
            json.dumps({r.key: r.patch_id for r in requests}, ensure_ascii=True).encode("ascii"),
        )
        files = []
        for w in written:
            name = w.path.relative_to(self.work_dir).as_posix()
            upload = f"{run.token}-{name.replace('/', '-')}"
            files.append(_FileState(name, w.model, w.requests, w.bytes, w.sha256, upload))
        rnd = _Round(n, max_requests, max_bytes, files)
        run.rounds.append(rnd)
        if run not in self.state.runs:
            self.state.runs.append(run)
        self._save()
        self._say(f"wrote: run {run.run} round {n}: {len(requests)} requests in {len(files)} files")
        return rnd

    def _finish(self, run: _Run) -> None:
        """Run (or resume) the rounds of ``run`` until nothing is left to resubmit."""
        i = 0
        while True:
            if i < len(run.rounds):
                rnd = run.rounds[i]
            else:
                last = run.rounds[-1]
                failures = self._failures(run, last)
                if not failures:
                    break
                if len(run.rounds) >= self.max_attempts:
                    self._dead_letters(run, last, failures)
                    break
                rnd = self._resubmit(run, last, failures)
            if not rnd.done:
                self._run_round(run, rnd)
            i += 1
        run.finished = True
        self._save()

    def _failures(self, run: _Run, rnd: _Round) -> dict[str, str]:
        self._refresh_done()
        failures: dict[str, str] = {}
        for f in rnd.files:
            failures.update(self._outcome(run, rnd, f).failures)
        return {k: why for k, why in failures.items() if k not in self.done}

    def _resubmit(self, run: _Run, last: _Round, failures: Mapping[str, str]) -> _Round:
        patches = self._patch_ids(run, last)
        requests = []
        for f in last.files:
            for key, line in _read_input(self.work_dir / f.name).items():
                if key in failures:
                    requests.append(BatchRequest(key, patches[key], line["body"]))
        max_requests, max_bytes = last.max_requests, last.max_bytes
        refused = [f for f in last.files if f.status == "failed"]
        if refused and requests:  # the API refused whole files (size, enqueued tokens): go smaller
            longest = max(len(r.line()) for r in requests)
            max_requests = max(1, min(max_requests, max(f.requests for f in refused) // 2))
            max_bytes = max(longest, min(max_bytes, max(f.bytes for f in refused) // 2))
        return self._new_round(run, last.round + 1, requests, max_requests, max_bytes)

    def _dead_letters(self, run: _Run, last: _Round, failures: Mapping[str, str]) -> None:
        patches = self._patch_ids(run, last)
        for key, why in failures.items():
            self.dead_writer.append(
                DeadLetter(key, patches[key], self.endpoint, why, attempts=last.round)
            )
        self.dead += len(failures)
        self._say(f"dead: {len(failures)} requests still failed after {last.round} rounds")

    def _run_round(self, run: _Run, rnd: _Round) -> None:
        self.rounds += 1
        for f in rnd.files:
            self._upload(run, f)
        for f in rnd.files:
            self._create(run, f)
        pending = [f for f in rnd.files if not f.recorded]
        while pending:
            for f in list(pending):
                if f.status not in TERMINAL:
                    self._poll(f)
                if f.status in TERMINAL:
                    self._download(f)
                    self._record(run, rnd, f)
                    pending.remove(f)
            if pending:
                time.sleep(self.poll_s)
        rnd.done = True
        self._save()

    # -- steps ------------------------------------------------------------------------------

    def _at_most_once(
        self,
        what: str,
        started: Callable[[], float | None],
        mark: Callable[[float], None],
        find: Callable[[], T | None],
        call: Callable[[], T],
    ) -> tuple[T, bool]:
        """Make a call that creates something on the server, never twice in effect: before
        each try after one whose outcome is unknown (a lost answer, a crash), look for what it
        created. Returns (the result, whether it was found rather than made)."""
        last: Exception | None = None
        for attempt in range(_CALL_TRIES):
            if started() is not None:
                found = find()
                if found is not None:
                    return found, True
            if attempt:
                time.sleep(min(60.0, max(self.poll_s, 0.05) * 2**attempt))
            mark(time.time())
            self._save()
            try:
                return call(), False
            except _UNKNOWN_OUTCOME as e:
                last = e
                log.warning("%s: %s; looking for it on the server before trying again", what, e)
            except openai.OpenAIError as e:
                raise BatchAPIError(f"{what} failed: {e}") from e
        raise BatchAPIError(f"{what} failed {_CALL_TRIES} times, last: {last}") from last

    def _upload(self, run: _Run, f: _FileState) -> None:
        if f.file_id is not None:
            return
        path = self.work_dir / f.name
        if _sha256(path) != f.sha256:
            raise BatchAPIError(
                f"{path} changed since it was written (sha256 differs from {self.state_path})"
            )

        def mark(t: float) -> None:
            f.upload_started_at = t

        def call() -> str:
            with open(path, "rb") as fh:
                obj = self.once.files.create(
                    file=(f.upload_name, fh, "application/jsonl"), purpose="batch"
                )
            if obj.bytes != f.bytes:
                raise BatchAPIError(
                    f"uploading {f.name}: the server holds {obj.bytes} bytes as {obj.id}, "
                    f"the file has {f.bytes}"
                )
            return obj.id

        file_id, found = self._at_most_once(
            f"uploading {f.name} ({f.requests} requests)",
            lambda: f.upload_started_at,
            mark,
            lambda: self._find_file(f),
            call,
        )
        f.file_id = file_id
        self.uploaded.append(file_id)
        self._save()
        if found:
            self._say(f"adopted: {f.name} was uploaded before as {f.file_id}")
        else:
            self._say(f"uploaded: {f.name} as {f.file_id} ({f.requests} requests, {f.bytes} bytes)")

    def _find_file(self, f: _FileState) -> str | None:
        assert f.upload_started_at is not None
        since = f.upload_started_at - _SEARCH_SLACK_S
        try:
            for obj in self.client.files.list(purpose="batch", order="desc"):
                if obj.filename == f.upload_name and obj.bytes == f.bytes:
                    return obj.id
                if obj.created_at < since:
                    break
        except openai.OpenAIError as e:
            raise BatchAPIError(f"looking for an earlier upload of {f.name} failed: {e}") from e
        return None

    def _create(self, run: _Run, f: _FileState) -> None:
        if f.batch_id is not None:
            return
        file_id = f.file_id
        assert file_id is not None

        def mark(t: float) -> None:
            f.create_started_at = t

        def call() -> Batch:
            return self.once.batches.create(
                input_file_id=file_id,
                endpoint=CHAT_URL,
                completion_window="24h",
                metadata={"cenlib_run": run.token, "cenlib_file": f.name},
            )

        batch, found = self._at_most_once(
            f"creating the batch of {f.name} (file {file_id})",
            lambda: f.create_started_at,
            mark,
            lambda: self._find_batch(run, f),
            call,
        )
        self._observe(f, batch)
        self.batches.append(batch.id)
        self._save()
        verb = "adopted" if found else "created"
        self._say(f"{verb}: {f.where()} ({f.requests} requests)")

    def _find_batch(self, run: _Run, f: _FileState) -> Batch | None:
        assert f.create_started_at is not None
        since = f.create_started_at - _SEARCH_SLACK_S
        try:
            for b in self.client.batches.list(limit=100):
                meta = b.metadata or {}
                if (
                    b.input_file_id == f.file_id
                    and meta.get("cenlib_run") == run.token
                    and meta.get("cenlib_file") == f.name
                ):
                    return b
                if b.created_at < since:
                    break
        except openai.OpenAIError as e:
            raise BatchAPIError(f"looking for an earlier batch of {f.name} failed: {e}") from e
        return None

    def _observe(self, f: _FileState, b: Batch) -> bool:
        """Copy what the server says of a batch into the state; whether its status changed."""
        changed = b.status != f.status
        f.batch_id, f.status, f.created_at = b.id, b.status, b.created_at
        f.output_file_id, f.error_file_id = b.output_file_id, b.error_file_id
        f.ended_at = b.completed_at or b.failed_at or b.expired_at or b.cancelled_at
        if b.errors is not None and b.errors.data:
            ids: list[str] | None = None
            f.errors = []
            for e in b.errors.data:
                where = ""
                if e.line is not None:
                    if ids is None:
                        ids = list(_read_input(self.work_dir / f.name))
                    cid = ids[e.line - 1] if 0 < e.line <= len(ids) else "?"
                    where = f"line {e.line} (custom_id {cid}): "
                f.errors.append(f"{where}{e.code}: {e.message}")
        return changed

    def _poll(self, f: _FileState) -> None:
        assert f.batch_id is not None
        try:
            b = self.client.batches.retrieve(f.batch_id)
        except openai.OpenAIError as e:
            raise BatchAPIError(f"polling {f.where()} failed: {e}") from e
        if self._observe(f, b):
            self._save()
        counts = b.request_counts
        done = f"{counts.completed + counts.failed}/{counts.total}" if counts else "?"
        self._say(f"poll: {f.where()}: {b.status}, {done} lines done")

    def _result_path(self, f: _FileState, kind: str) -> Path:
        return (self.work_dir / f.name).with_suffix(f".{kind}.jsonl")

    def _download(self, f: _FileState) -> None:
        if f.downloaded:
            return
        for kind, file_id in (("output", f.output_file_id), ("errors", f.error_file_id)):
            if file_id is None:
                continue
            try:
                data = self.client.files.content(file_id).content
            except openai.OpenAIError as e:
                raise BatchAPIError(
                    f"downloading the {kind} file {file_id} of {f.where()} failed: {e}"
                ) from e
            write_atomic(self._result_path(f, kind), data)
        f.downloaded = True
        self._save()
        self._say(f"downloaded: {f.where()}: {f.status}")

    def _outcome(self, run: _Run, rnd: _Round, f: _FileState) -> _Outcome:
        """Answers and failures of one file, from its downloads (pure; cached)."""
        if f.name in self._outcomes:
            return self._outcomes[f.name]
        inputs = _read_input(self.work_dir / f.name)
        patches = self._patch_ids(run, rnd)
        answers: dict[str, Response] = {}
        failures: dict[str, str] = {}
        bad: list[str] = []
        latency = 0.0
        if f.created_at is not None and f.ended_at is not None:
            latency = float(max(0, f.ended_at - f.created_at))
        for kind, file_id in (("output", f.output_file_id), ("errors", f.error_file_id)):
            path = self._result_path(f, kind)
            if file_id is None or not path.exists():
                continue
            label = f"{f.where()}, {kind} file {file_id}"
            for n, obj in _result_lines(path, bad, label):
                cid = obj.get("custom_id")
                if not isinstance(cid, str) or cid not in inputs:
                    bad.append(f"{label} line {n}: unknown custom_id {cid!r}")
                    continue
                where = f"{label} line {n} (custom_id {cid})"
                why = _line_failure(obj)
                got = _completion(obj["response"].get("body")) if why is None else why
                if isinstance(got, str):
                    if cid not in answers:
                        failures[cid] = f"{where}: {got}"
                    continue
                content, tokens_in, tokens_out = got
                failures.pop(cid, None)
                answers[cid] = Response(
                    key=cid,
                    patch_id=patches[cid],
                    endpoint=self.endpoint,
                    model=str(inputs[cid]["body"]["model"]),
                    content=content,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    latency_s=latency,
                    cost=self.price(tokens_in, tokens_out),
                    attempts=rnd.round,
                    finished_at=_iso(f.ended_at),
                )
        for line in bad:
            log.warning("%s", line)
        for cid in inputs:
            if cid not in answers and cid not in failures:
                why = f"{f.where()} ended {f.status} without a result for custom_id {cid}"
                if f.errors:
                    why += ": " + "; ".join(f.errors[:3])
                if bad:
                    why += f" ({len(bad)} unreadable result lines, first: {bad[0]})"
                failures[cid] = why
        outcome = _Outcome(answers, failures)
        self._outcomes[f.name] = outcome
        return outcome

    def _record(self, run: _Run, rnd: _Round, f: _FileState) -> None:
        if f.recorded:
            return
        outcome = self._outcome(run, rnd, f)
        self._refresh_done()
        new = [r for k, r in outcome.answers.items() if k not in self.done]
        self.shard.append_many(new)
        self.done.update(r.key for r in new)
        for r in new:
            self.tokens_in += r.tokens_in or 0
            self.tokens_out += r.tokens_out or 0
            if r.cost is not None:
                self.cost = (self.cost or 0.0) + r.cost
        self.answered += len(new)
        f.recorded = True
        self._save()
        before = len(outcome.answers) - len(new)
        self._say(
            f"recorded: {f.where()}: {len(new)} answers ({before} answered before), "
            f"{len(outcome.failures)} failed"
        )


def _result_lines(path: Path, bad: list[str], label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                bad.append(f"{label} line {n}: not JSON ({e})")
                continue
            if not isinstance(obj, dict):
                bad.append(f"{label} line {n}: not a JSON object")
                continue
            yield n, obj


def run_batch_api(
    client: openai.OpenAI,
    requests: Sequence[BatchRequest],
    work_dir: str | os.PathLike[str],
    responses_dir: str | os.PathLike[str],
    *,
    endpoint: str,
    price: Price,
    poll_s: float = 30.0,
    max_attempts: int = 3,
    writer_id: str = "batch",
    progress: Callable[[str], None] | None = None,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
) -> BatchReport:
    """Answer ``requests`` through the Batch API of ``client`` into ``responses_dir``.

    See the module doc for the steps, the work directory and how a re-run resumes. ``endpoint``
    names the endpoint in the records; ``price(tokens_in, tokens_out)`` is an answer's cost
    (give the Batch API's prices, usually half the synchronous ones). Answers go to
    ``responses_dir/shard-<writer_id>.jsonl``, dead letters to ``dead-<writer_id>.jsonl``.
    Raises :class:`BatchAPIError` when a step fails after the client's own retries; the run can
    be resumed by calling again.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if not (math.isfinite(poll_s) and poll_s >= 0):
        raise ValueError(f"poll_s must be a finite number >= 0, got {poll_s}")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    fd = _lock(work)
    try:
        with (
            ShardWriter(responses_dir, writer_id) as shard,
            DeadLetterWriter(responses_dir, writer_id) as dead,
        ):
            runner = _Runner(
                client,
                work,
                Path(responses_dir),
                shard,
                dead,
                endpoint=endpoint,
                price=price,
                poll_s=poll_s,
                max_attempts=max_attempts,
                progress=progress,
                max_requests=max_requests,
                max_bytes=max_bytes,
            )
            return runner.run(requests)
    finally:
        os.close(fd)
