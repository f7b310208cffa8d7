"""Profiles of the job's stages: each runs in a named Dask span with a performance report.

``with stage_profile(client, "ingest", out) as prof:`` puts the stage's tasks in the span
``ingest`` (the dashboard's Fine Performance Metrics and Spans pages filter by it), writes
Dask's ``performance_report`` to ``out/profile/ingest.html``, and leaves in ``prof.figures``
what the run summary lists per stage: wall time, tasks, bytes read and written by the worker
processes, peak worker memory, spill to disk, and the Fine Performance Metrics' top activities.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed import Client, performance_report
from distributed.spans import span
from rich.table import Table

PROFILE_DIR = "profile"
SAMPLE_SECONDS = 0.5
TOP = 6
IDLE = "idle or other spans"  # Dask's name for worker thread time no task of the span used


@dataclasses.dataclass
class StageProfile:
    stage: str
    report: Path
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


def profile_path(out: Path, stage: str) -> Path:
    """Where the performance report of ``stage`` goes in run directory ``out``."""
    return Path(out) / PROFILE_DIR / f"{stage}.html"


def _io_counters(dask_worker: Any = None) -> tuple[int, int]:
    """Bytes this worker process passed to read and write calls (files, pipes; Linux rchar /
    wchar), so a stage's reads of COGs and writes of shards count whatever the file system."""
    import psutil

    c = psutil.Process().io_counters()
    return int(getattr(c, "read_chars", c.read_bytes)), int(
        getattr(c, "write_chars", c.write_bytes)
    )


async def _heartbeat(dask_worker: Any) -> None:
    """Send this worker's metrics now rather than at its next heartbeat."""
    await dask_worker.heartbeat()


def _span_figures(dask_scheduler: Any, span_id: str) -> dict[str, Any]:
    """Tasks, result bytes and Fine Performance Metrics of one span (run on the scheduler)."""
    sp = dask_scheduler.extensions["spans"].spans.get(span_id)
    if sp is None:  # a stage that submitted nothing
        return {"tasks": 0, "erred": 0, "result_bytes": 0, "activities": {}, "by_prefix": {}}
    states = sp.states
    activities: dict[str, float] = defaultdict(float)
    by_prefix: dict[str, float] = defaultdict(float)
    for key, value in sp.cumulative_worker_metrics.items():
        if key[0] == "execute" and key[-1] == "seconds":
            activities[str(key[2])] += value
            if key[1] != "N/A":
                by_prefix[str(key[1])] += value
    return {
        "tasks": int(sum(states.values())),
        "erred": int(states.get("erred", 0)),
        "result_bytes": int(sp.nbytes_total),
        "activities": dict(activities),
        "by_prefix": dict(by_prefix),
    }


class _Sampler:
    """Peak worker memory and spill to disk, from the scheduler's view of its workers, sampled
    in a thread while the stage runs (the scheduler's metrics are the workers' heartbeats)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.peak_memory = 0
        self.spill = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cen-profile-sampler", daemon=True)

    def sample(self) -> None:
        with contextlib.suppress(Exception):  # a scheduler going away ends sampling, not the run
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
            for w in workers.values():
                m = w.get("metrics", {})
                self.peak_memory = max(self.peak_memory, int(m.get("memory") or 0))
                spilled = m.get("spilled_bytes") or {}
                self.spill = max(self.spill, int(spilled.get("disk") or 0))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def __enter__(self) -> _Sampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


def _worker_io(client: Client) -> dict[str, tuple[int, int]]:
    with contextlib.suppress(Exception):
        return dict(client.run(_io_counters, on_error="ignore"))
    return {}


@contextlib.contextmanager
def stage_profile(client: Client, stage: str, out: Path) -> Iterator[StageProfile]:
    """Run the body as stage ``stage``: a span, a performance report, and its figures."""
    path = profile_path(out, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = StageProfile(stage, path)
    t0 = time.perf_counter()
    io0 = _worker_io(client)
    with _Sampler(client) as sampler:
        # inline: the report opens offline (on a cluster's login node, in a year's time)
        with span(stage) as span_id, performance_report(filename=str(path), mode="inline"):
            yield prof
        with contextlib.suppress(Exception):
            client.run(_heartbeat, on_error="ignore")
    io1 = _worker_io(client)
    # Workers that lived through the stage; one restarted in between starts its counters anew.
    common = [w for w in io1 if w in io0 and io1[w][0] >= io0[w][0]]
    figures: dict[str, Any] = {"wall": round(time.perf_counter() - t0, 2)}
    try:
        spans = client.run_on_scheduler(_span_figures, span_id=span_id)
    except Exception as e:
        spans = {"error": f"{type(e).__name__}: {e}"}
    activities = spans.pop("activities", {})
    by_prefix = spans.pop("by_prefix", {})
    figures |= spans
    figures |= {
        "bytes_read": sum(io1[w][0] - io0[w][0] for w in common),
        "bytes_written": sum(io1[w][1] - io0[w][1] for w in common),
        "peak_memory": sampler.peak_memory,
        "spill": sampler.spill,
        "top_activities": [
            [a, round(s, 3)] for a, s in sorted(activities.items(), key=lambda kv: -kv[1])[:TOP]
        ],
        "top_tasks": [
            [p, round(s, 3)] for p, s in sorted(by_prefix.items(), key=lambda kv: -kv[1])[:TOP]
        ],
        "report": f"{PROFILE_DIR}/{path.name}",
    }
    prof.figures = figures


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def profile_table(profiles: dict[str, dict[str, Any]], out: Path) -> Table:
    """The run's stages side by side: where the time, the tasks and the memory went."""
    table = Table(title=f"profile (reports in {Path(out) / PROFILE_DIR})")
    for col in ("stage", "wall s", "tasks", "read", "written", "peak worker mem", "spill"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    table.add_column("top activity")
    for stage, f in profiles.items():
        top = [a for a in f.get("top_activities") or [] if a[0] != IDLE]
        table.add_row(
            stage,
            f"{f.get('wall', 0):.1f}",
            str(f.get("tasks", "")),
            _size(f.get("bytes_read", 0)),
            _size(f.get("bytes_written", 0)),
            _size(f.get("peak_memory", 0)),
            _size(f.get("spill", 0)),
            f"{top[0][0]} {top[0][1]:.1f} s" if top else "",
        )
    return table
