"""SLURM for real: a single-node SLURM cluster on loopback (cluster/slurm/start.sh, Debian's
munge and slurm-wlm from `make slurm`), and a job whose Dask workers are SLURM jobs submitted
by dask-jobqueue's SLURMCluster from a spec made of cluster/slurm.yaml."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "cluster" / "slurm"
NODE = "cen-node"  # the node start.sh configures
DAEMONS = {"munged": "munge/munged.pid", "slurmctld": "slurmctld.pid", "slurmd": "slurmd.pid"}
JOBS = min(2, len(os.sched_getaffinity(0)))  # worker jobs of 1 core each that fit the node
NEEDED = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")

# Loaded into the job's scheduler (it runs inside `cen run`) through Dask's preload config: a
# line per worker that registers, as the scheduler saw it.
SCHEDULER_PRELOAD = """
import json, os
from distributed.diagnostics.plugin import SchedulerPlugin

class RecordWorkers(SchedulerPlugin):
    def add_worker(self, scheduler, worker):
        ws = scheduler.workers[worker]
        line = {"address": worker, "name": str(ws.name), "host": ws.host,
                "scheduler": scheduler.address}
        with open(os.environ["CEN_TEST_WORKERS_SEEN"], "a") as f:
            f.write(json.dumps(line) + "\\n")

def dask_setup(scheduler):
    scheduler.add_plugin(RecordWorkers(), name="cen-test-record-workers")
"""


def _need_slurm() -> None:
    missing = [b for b in NEEDED if shutil.which(b) is None]
    if missing:  # `make test` installs them first; a missing one is a failure, not a skip
        pytest.fail(
            f"{', '.join(missing)} not on PATH: install munge and slurm-wlm with `make slurm`"
        )


def _start(d: Path) -> dict[str, str]:
    """start.sh D; the environment that points SLURM's clients at that cluster."""
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "start.sh"), str(d)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"export SLURM_CONF={d / 'slurm.conf'}"
    return {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}


def _stop(d: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS / "stop.sh"), str(d)], capture_output=True, text=True, timeout=180
    )


def _pids(d: Path) -> dict[str, int]:
    return {n: int((d / f).read_text()) for n, f in DAEMONS.items() if (d / f).is_file()}


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return re.search(r"^State:\s*Z", status, re.M) is None  # a zombie has exited


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A SLURM cluster for this module's tests: its directory and the clients' environment."""
    _need_slurm()
    d = tmp_path_factory.mktemp("slurm")
    try:
        yield d, _start(d)
    finally:
        _stop(d)


def _jobcomp(d: Path) -> list[dict[str, str]]:
    """The finished jobs as jobcomp/filetxt logged them (sacct needs a database; this doesn't)."""
    path = d / "jobcomp.txt"
    text = path.read_text() if path.is_file() else ""
    return [dict(f.split("=", 1) for f in line.split()) for line in text.splitlines()]


class _Squeue:
    """Polls squeue (job id, name, state, node) once a second while a run goes on."""

    def __init__(self, env: dict[str, str]) -> None:
        self.seen: dict[str, set[tuple[str, str, str]]] = {}
        self._env, self._done = env, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._done.wait(1.0):
            out = subprocess.run(
                ["squeue", "-h", "-o", "%i|%j|%T|%N"],
                capture_output=True, text=True, env=self._env, timeout=30,
            ).stdout  # fmt: skip
            for line in out.splitlines():
                job, name, state, node = line.split("|")
                self.seen.setdefault(job, set()).add((name, state, node))

    def __enter__(self) -> _Squeue:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


def _slurm_spec(tmp_path: Path) -> Path:
    """cluster/slurm.yaml, fitted to this machine: 1 core and 2 GiB per job, two jobs; the
    prologue activates this venv by its path (the run's directory has no .venv of its own)."""
    spec = yaml.safe_load((REPO / "cluster" / "slurm.yaml").read_text())
    cc = spec["cluster"]
    cc["dashboard_address"] = ":0"
    cc["worker_timeout"] = 180
    venv = Path(sys.executable).parent.parent
    cc["slurm"] |= {
        "queue": "debug",
        "cores": 1,
        "processes": 1,
        "memory": "2GiB",
        "walltime": "00:20:00",
        "minimum": JOBS,
        "maximum": JOBS,
        "log_directory": str(tmp_path / "slurm-logs"),
        "job_script_prologue": ["cd $SLURM_SUBMIT_DIR", f"source {venv}/bin/activate"],
    }
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
@pytest.mark.e2e
def test_the_jobs_workers_run_as_slurm_jobs(
    slurm: tuple[Path, dict[str, str]], tmp_path: Path, tiny_world: Path
) -> None:
    d, env = slurm
    before = {j["JobId"] for j in _jobcomp(d)}
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["output"] = str(tmp_path / "run")
    cfg["world"] = {"preset": "tiny", "seed": 0, "cache_dir": str(tiny_world.parent)}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    preload = tmp_path / "record_workers.py"
    preload.write_text(SCHEDULER_PRELOAD)
    seen_path = tmp_path / "workers-seen.jsonl"
    run_env = env | {
        "COLUMNS": "200",
        "DASK_DISTRIBUTED__SCHEDULER__PRELOAD": json.dumps([str(preload)]),
        "CEN_TEST_WORKERS_SEEN": str(seen_path),
    }
    cen = Path(sys.executable).parent / "cen"
    t0 = time.monotonic()
    command = [str(cen), "run", str(config), "--until", "prompt"]
    with _Squeue(env) as squeue:
        proc = subprocess.run(
            [*command, "--cluster", str(_slurm_spec(tmp_path))],
            capture_output=True, text=True, env=run_env, cwd=tmp_path, timeout=420,
        )  # fmt: skip
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # (a) The job ran its stages and wrote their outputs.
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stages"] == ["plan", "ingest", "analyze", "prompt"]
    assert summary["ingest"]["ok"] > 0 and summary["cluster"]["workers"] >= 1
    prompts = (run / "prompts.jsonl").read_text().splitlines()
    assert len(prompts) == summary["prompt"]["prompts"] == summary["ingest"]["ok"]
    assert (run / "analysis.parquet").is_file() and (run / "dataset.zarr").is_dir()

    # (b) The workers were SLURM jobs: squeue showed them running on the node while the job ran,
    # and SLURM logged each one ending (dask-jobqueue cancels its jobs when the cluster closes).
    running = {j for j, rows in squeue.seen.items() if ("dask-worker", "RUNNING", NODE) in rows}
    ended = {j["JobId"]: j for j in _jobcomp(d) if j["JobId"] not in before}
    workers = {k: j for k, j in ended.items() if j["Name"] == "dask-worker"}
    assert len(workers) == JOBS and set(workers) == set(ended), ended  # minimum = maximum
    assert running == set(workers), squeue.seen
    for job in workers.values():
        assert job["JobState"] in {"CANCELLED", "COMPLETED"}, job
        assert job["NodeList"] == NODE and job["Partition"] == "debug"
        assert "cpu=1" in job["Tres"] and "mem=2G" in job["Tres"], job
        assert job["WorkDir"] == str(tmp_path)  # submitted from the run's directory
    # squeue is empty again: no worker job outlives the run.
    left = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env).stdout
    assert left.strip() == ""

    # (c) The scheduler's workers are those jobs: the address each SLURM job's worker log says it
    # started at is one the scheduler registered, with the same name and host, and back.
    seen = [json.loads(ln) for ln in seen_path.read_text().splitlines()]
    assert seen and len({s["scheduler"] for s in seen}) == 1
    from_jobs = {}
    for job_id in workers:
        log = (tmp_path / "slurm-logs" / f"dask-worker-{job_id}.err").read_text()
        address = re.search(r"Start worker at:\s+(\S+)", log)
        name = re.search(r"Worker name:\s+(\S+)", log)
        assert address and name, log
        assert re.findall(r"Registered to:\s+(\S+)", log) == [seen[0]["scheduler"]]
        from_jobs[address.group(1)] = name.group(1)
    assert {s["address"]: s["name"] for s in seen} == from_jobs
    assert all(s["address"].startswith(f"tcp://{s['host']}:") for s in seen)
    assert all(n.startswith("SLURMCluster-") for n in from_jobs.values())
    print(f"SLURM run: {seconds:.0f} s, worker jobs {sorted(workers)}")


@pytest.mark.e2e
def test_a_job_slurm_would_not_run_is_refused_before_any_worker_waits(
    slurm: tuple[Path, dict[str, str]], tmp_path: Path, tiny_world: Path
) -> None:
    d, env = slurm
    spec_path = _slurm_spec(tmp_path)
    spec = yaml.safe_load(spec_path.read_text())
    spec["cluster"]["slurm"]["memory"] = "100TiB"  # more than the node has
    spec_path.write_text(yaml.safe_dump(spec))
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["output"] = str(tmp_path / "run")
    cfg["world"] = {"preset": "tiny", "seed": 0, "cache_dir": str(tiny_world.parent)}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cen = Path(sys.executable).parent / "cen"
    before = _jobcomp(d)
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(cen), "run", str(config), "--until", "plan", "--cluster", str(spec_path)],
        capture_output=True, text=True, env=env | {"COLUMNS": "200"}, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    said = " ".join(proc.stderr.split())
    assert proc.returncode != 0 and "SLURM would not run the worker job" in said, proc.stderr
    assert "Requested node configuration is not available" in said
    assert "Traceback" not in proc.stderr and "AssertionError" not in proc.stderr
    assert time.monotonic() - t0 < 180  # not after worker_timeout
    assert _jobcomp(d) == before  # nothing was submitted
    squeue = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env=env)
    assert squeue.returncode == 0 and squeue.stdout.strip() == ""


@pytest.mark.slow
def test_start_is_idempotent_and_stop_ends_every_daemon(tmp_path: Path) -> None:
    _need_slurm()
    d = tmp_path / "c"
    try:
        env = _start(d)
        pids, conf = _pids(d), (d / "slurm.conf").read_text()
        assert set(pids) == set(DAEMONS) and all(_alive(p) for p in pids.values())
        lines = conf.splitlines()
        assert "ProctrackType=proctrack/linuxproc" in lines and "TaskPlugin=task/none" in lines
        assert f"AuthInfo=socket={d}/munge/munge.socket" in lines
        assert f"JobCompLoc={d}/jobcomp.txt" in lines
        assert f"CPUs={len(os.sched_getaffinity(0))} " in conf  # `nproc`
        # Started again: the same daemons, the same configuration (ports included).
        _start(d)
        assert _pids(d) == pids and (d / "slurm.conf").read_text() == conf
        out = subprocess.run(
            ["srun", "-N1", "-n1", "--mem=100M", "printenv", "SLURM_JOB_ID"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0 and out.stdout.strip().isdigit(), out.stderr
    finally:
        stopped = _stop(d)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_alive(p) for p in pids.values()) and _pids(d) == {}
    assert _stop(d).returncode == 0  # nothing left to stop is fine too


def test_start_names_what_is_missing(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "dirname", "mkdir"):
        (bare / tool).symlink_to(shutil.which(tool) or tool)
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "start.sh"), str(tmp_path / "c")],
        capture_output=True, text=True, env={"PATH": str(bare)},
    )  # fmt: skip
    assert proc.returncode == 1
    assert "munged not found" in proc.stderr and "make slurm" in proc.stderr
