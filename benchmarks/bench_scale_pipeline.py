"""The stages after ingest at scale: analyze, prompt, caption, verify, export, report.

For each size (default 4,000 and 16,000 patches; ChatEarthNet's 163,488 with
``CEN_BENCH_PATCHES=163488``) the benchmark writes a labels-plus-images store in the run layout
(blue, green, red reflectance and land cover on the ChatEarthNet grid, drawn from a
`make demo` run when there is one, as ``bench_export.py`` does), then runs the job from analyze
to report with the `rules` captioner on a 2-worker LocalCluster with a 3 GiB memory limit per
worker. Per stage it prints what the job's own profile recorded (``summary.json`` ``profile``):
wall time, patches/s, tasks, peak worker memory and spill; then, for the first and the last
size, the ratio of peak worker memory per stage (it must not grow with the number of patches).

``CEN_BENCH_FORMATS`` (comma-separated) picks the export formats: every format by default;
at 163,488 patches every format writes about 100 GB, so pass e.g. ``chatearthnet,llava,parquet``.
``CEN_BENCH_DIR`` puts the runs somewhere other than a temp dir (they are deleted after).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _stages import print_memory_ratio, print_stages
from bench_export import write_store

from cenlib.config import parse_config
from cenlib.job import run_job

SIZES = [int(s) for s in os.environ.get("CEN_BENCH_PATCHES", "4000,16000").split(",")]
FORMATS = [f for f in os.environ.get("CEN_BENCH_FORMATS", "").split(",") if f]
STAGES = ("analyze", "prompt", "caption", "verify", "export", "report")


def _run(work: Path, n: int) -> dict[str, Any]:
    run = work / f"run{n}"
    t = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # shards written by two threads (encoding frees the GIL)
        write_store(str(run / "dataset.zarr"), n, pool)
    print(f"{n} patches: labels-plus-images store written in {time.perf_counter() - t:.0f} s")
    cfg = parse_config(
        {
            "name": f"scale-{n}",
            "output": str(run),
            "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "3GiB"},
            "caption": {"endpoints": [{"kind": "rules"}]},
            "export": {"formats": FORMATS} if FORMATS else {},
        }
    )
    summary = run_job(cfg, Console(quiet=True), STAGES)
    exported = summary["export"].exported
    print(f"  exported {exported} patches; {summary['seconds']:.0f} s from analyze to report")
    prof = print_stages(summary, STAGES, n)
    shutil.rmtree(run, ignore_errors=True)
    return prof


def main() -> None:
    base = os.environ.get("CEN_BENCH_DIR")
    work = Path(tempfile.mkdtemp(prefix="cen-bench-scale-", dir=base))
    try:
        profiles = {n: _run(work, n) for n in SIZES}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_memory_ratio(profiles, STAGES)


if __name__ == "__main__":
    main()
