"""The whole pipeline on a real multi-process cluster, under faults: workers SIGKILLed during
ingest and during captioning, the client SIGKILLed mid-run and run again. Each time the run
completes and its dataset is the same, file for file and byte for byte, as an uninterrupted
run's; no caption request is paid twice (the fake OpenAI server's request log).

The cluster is ``dask scheduler`` plus two ``dask worker`` processes started from the command
line on loopback (``cluster_support``), the job is ``cen run CONFIG --scheduler ADDR`` in its own
process, the captions come from ``openai_server.FakeOpenAI`` (answers by the rules captioner, so
that they pass verification; some latency, so that captioning lasts long enough to be hit).

Every run writes to the same absolute directory (the finished one is moved aside), talks to the
same STAC APIs and the same caption server: the config, and so every byte that derives from it
(the config hash in the card, the endpoint in the captions, the API root in the items' links),
is the same for all of them. Only files that record how a run went (times, latencies, the
scheduler's address, task tokens) are left out of the comparison; see ``RUN_RECORDS``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from caption_support import KEY_ENV, body_key
from cluster_support import DaskProcesses, dask_processes, log_tail
from openai_server import FakeOpenAI

from cenlib.captions.rules import answer as rules_answer

REPO = Path(__file__).resolve().parents[1]
CEN = str(Path(sys.executable).parent / "cen")
DOLOMITES = [11.97, 46.56, 12.03, 46.61]  # 16 patches of the demo world
LATENCY = 0.8  # seconds the caption server takes per answer: captioning lasts a few seconds
RUN_TIMEOUT = 400.0

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

RUN_RECORDS = {
    "summary.json": "the job's clock per stage and the cluster's dashboard address",
    "report.html": "shows summary.json's stage times",
    "caption_report.json": "this run's requests, latencies and seconds",
    "verify_report.json": "this run's seconds",
    "config.yaml": "the run config with the scheduler address (--scheduler); compared without it",
    "responses.jsonl": "latency and time of each answer; compared without them",
}
"""Run directory files that record how the run went, not what the dataset is."""
RUN_RECORD_DIRS = {
    "profile": "the Dask performance report of each stage (task timings)",
    "responses": "the caption tasks' own shards, named by task token (a resumed run's differ), "
    "merged into responses.jsonl",
}


def responder(request: dict[str, Any]) -> str:
    """A truthful caption of the patch the prompt describes (verification passes it)."""
    return str(rules_answer(request["messages"][:2], None, 0, "fake"))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=responder, latency=LATENCY) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskProcesses]:
    with dask_processes(2, logs=tmp_path_factory.mktemp("dask-logs")) as c:
        yield c


@pytest.fixture(scope="module")
def config(
    tmp_path_factory: pytest.TempPathFactory, world_apis: dict[str, str], fake: FakeOpenAI
) -> Path:
    """The run config of every run here: the Dolomites of the demo world, through the
    session's STAC APIs, captioned by ``fake``; output always in ``<dir>/run``."""
    base = tmp_path_factory.mktemp("faults")
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["output"] = str(base / "run")
    cfg["aoi"] = [DOLOMITES]
    cfg["sources"] = {
        "sentinel2": {
            "api": world_apis["earth-search"],
            "collection": "sentinel-2-l2a",
            "dialect": "earth-search",
        },
        "worldcover": {
            "api": world_apis["planetary-computer"],
            "collection": "esa-worldcover",
            "dialect": "planetary-computer",
        },
    }
    cfg["ingest"]["shard_patches"] = 4
    cfg["caption"] = {
        "endpoints": [
            {
                "kind": "openai",
                "name": "fake",
                "base_url": fake.base_url,
                "model": "fake-model",
                "api_key_env": KEY_ENV,
                "requests_per_minute": None,
                "max_concurrency": 1,
            }
        ],
        "batch_size": 8,  # one request at a time: a task answers for about 8 x LATENCY s
        "backoff_s": 0.05,
        "backoff_max_s": 0.5,
    }
    path = base / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_run(config: Path, cluster: DaskProcesses, log: Path) -> subprocess.Popen[bytes]:
    """``cen run CONFIG --scheduler ADDR`` in its own process, output to ``log``."""
    with open(log, "ab") as f:
        return subprocess.Popen(
            [CEN, "run", str(config), "--scheduler", cluster.address],
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=config.parent,
            env={**os.environ, "COLUMNS": "200"},
            start_new_session=True,
        )


def finish(proc: subprocess.Popen[bytes], log: Path, cluster: DaskProcesses) -> None:
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = -9
    logs = "\n".join(f"--- {p.name}\n{log_tail(p, 20)}" for p in sorted(cluster.logs.glob("*.log")))
    assert rc == 0, f"cen run exited {rc}:\n{log_tail(log, 60)}\n{logs}"


def set_aside(config: Path, name: str) -> Path:
    """Move the finished run directory to ``name`` (the next run starts from nothing)."""
    run, target = config.parent / "run", config.parent / name
    assert run.is_dir(), "the run wrote no run directory"
    os.rename(run, target)
    return target


def dataset(run: Path) -> dict[str, str]:
    """Every file of a run directory -> sha256 of its bytes, but the run's records
    (``RUN_RECORDS``): those are compared without their timings or not at all."""
    out: dict[str, str] = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run).as_posix()
        if not p.is_file() or rel in RUN_RECORDS or rel.split("/")[0] in RUN_RECORD_DIRS:
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.pop("cluster")
    out["config.yaml (but cluster)"] = json.dumps(cfg, sort_keys=True, default=str)
    answers = []
    for line in (run / "responses.jsonl").read_text().splitlines():
        rec = json.loads(line)
        answers.append({k: v for k, v in rec.items() if k not in ("latency_s", "finished_at")})
    out["responses.jsonl (but timings)"] = json.dumps(answers, sort_keys=True)
    return out


def assert_same_dataset(run: Path, reference: Path) -> None:
    got, want = dataset(run), dataset(reference)
    missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
    differ = sorted(k for k in want.keys() & got.keys() if want[k] != got[k])
    assert not (missing or extra or differ), (
        f"{run.name} differs from {reference.name}: missing {missing}, extra {extra}, "
        f"different bytes {differ}"
    )
    assert any(k.startswith("export/chatearthnet/images/") for k in got)
    assert any(k.startswith("dataset.zarr/reflectance/c") for k in got)


def paid(fake: FakeOpenAI, since: int) -> Counter[str]:
    """Answered (billed) requests per request key, from request number ``since`` on."""
    return Counter(
        body_key(r.body) for r in fake.requests[since:] if r.answered and r.body is not None
    )


def captions_of(run: Path) -> int:
    return len((run / "captions.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def reference(config: Path, cluster: DaskProcesses, fake: FakeOpenAI) -> Path:
    """An uninterrupted run on the same cluster."""
    since = fake.count
    log = config.parent / "reference.log"
    finish(start_run(config, cluster, log), log, cluster)
    ref = set_aside(config, "reference")
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["ingest"]["ok"] >= 8 and summary["ingest"]["shards_written"] >= 3, summary
    answered = paid(fake, since)
    assert captions_of(ref) == summary["caption"]["captioned"] == len(answered) > 4
    assert set(answered.values()) == {1}
    return ref


def test_workers_killed_during_ingest_and_captioning(
    config: Path, cluster: DaskProcesses, fake: FakeOpenAI, reference: Path
) -> None:
    """SIGKILL a worker process while it writes an ingest shard (its nanny starts a new one),
    then a whole ``dask worker`` (nanny and worker) while it answers captions: the run
    completes on what is left, with the reference's dataset, and pays each request once."""
    since = fake.count
    log = config.parent / "worker-kills.log"
    proc = start_run(config, cluster, log)
    try:
        _, pid, _ = cluster.wait_executing("ingest-shard-", timeout=RUN_TIMEOUT)
        cluster.kill_worker(pid)
        _, pid, _ = cluster.wait_executing("caption-", timeout=RUN_TIMEOUT)
        cluster.kill_nanny(pid)
        finish(proc, log, cluster)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = set_aside(config, "worker-kills")
    assert_same_dataset(run, reference)
    answered = paid(fake, since)
    assert len(answered) == captions_of(run) and max(answered.values()) == 1, answered
    cluster.add_worker()  # for the next test: two workers again
    cluster.wait_workers(2)


def test_client_killed_mid_run_then_run_again(
    config: Path, cluster: DaskProcesses, fake: FakeOpenAI, reference: Path
) -> None:
    """SIGKILL ``cen run`` itself while its caption tasks run, then run it again: the second
    run resumes (the ingested shards and the answers stored stay done), its dataset is the
    reference's, and no request is answered twice over the two runs."""
    since = fake.count
    log = config.parent / "client-kill.log"
    proc = start_run(config, cluster, log)
    try:
        cluster.wait_executing("caption-", timeout=RUN_TIMEOUT)
        assert fake.wait_for(since + 1, timeout=60)
        deadline = time.monotonic() + 60
        while not paid(fake, since) and time.monotonic() < deadline:
            time.sleep(0.05)
        running = sum(len(keys) for keys in cluster.executing("caption-").values())
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = sum(paid(fake, since).values())
    assert before >= 1 and not (config.parent / "run" / "captions.jsonl").exists()
    # The scheduler cancels the dead client's tasks, but a task's thread runs on: the caption
    # tasks must stop sending (what was in flight is answered and stored), or they pay for
    # answers nobody waits for, and a run started meanwhile sends the same requests again.
    time.sleep(8 * LATENCY)
    after = [round(r.t - killed_at, 2) for r in fake.requests[since:] if r.t > killed_at]
    # Each task may still send the one request it had started (max_concurrency 1; on a fresh
    # worker the start includes importing the SDK, seconds); not the rest of its batch.
    assert len(after) <= max(running, 1), f"{running} tasks ran at the kill; sent at +{after} s"
    proc = start_run(config, cluster, log)
    finish(proc, log, cluster)
    run = set_aside(config, "client-kill")
    assert_same_dataset(run, reference)
    answered = paid(fake, since)
    assert len(answered) == captions_of(run) and max(answered.values()) == 1, answered
    summary = json.loads((run / "summary.json").read_text())
    assert summary["caption"]["already_answered"] >= 1
    assert summary["ingest"]["shards_written"] == 0  # every shard was done before the kill
