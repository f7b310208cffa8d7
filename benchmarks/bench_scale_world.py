"""The whole job at scale on the `large` synthetic world: plan, ingest, ... export, report.

The `large` world has about 7,400 patches on ChatEarthNet's zoom-13 tiling, fewer than the
16,000 this benchmark needs, so it plans on the same tiling one zoom finer (zoom 14: four
patches where zoom 13 has one, about 29,000 over the world's areas; each patch still 256 px)
and draws ``plan.count`` of them: 4,000 and 16,000 by default (``CEN_BENCH_PATCHES``). Every
stage runs as ``cen run`` runs it, with the `rules` captioner, on a 2-worker LocalCluster with a
3 GiB memory limit per worker. Per stage it prints what the job's own profile recorded
(``summary.json`` ``profile``): wall time, patches/s, tasks, peak worker memory and spill; then
the ratio of peak worker memory per stage between the first and the last size (it must not grow
with the number of patches).

The world is built once into ``<tmp>/cen-bench-worlds/large-seed0`` (about 14 min and 7 GB of
RAM; ``CEN_BENCH_WORLDS`` puts it elsewhere). ``CEN_BENCH_FORMATS`` picks the export formats
(every format by default); ``CEN_BENCH_DIR`` puts the runs somewhere other than a temp dir
(they are deleted after); ``CEN_BENCH_PRESET=demo`` tries it on the small world.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from _stages import print_memory_ratio, print_stages

from cenlib.config import parse_config
from cenlib.job import STAGES, as_json, run_job
from cenlib.world.build import ensure_world

REPO = Path(__file__).resolve().parent.parent
SIZES = [int(s) for s in os.environ.get("CEN_BENCH_PATCHES", "4000,16000").split(",")]
FORMATS = [f for f in os.environ.get("CEN_BENCH_FORMATS", "").split(",") if f]
WORLDS = Path(os.environ.get("CEN_BENCH_WORLDS", Path(tempfile.gettempdir()) / "cen-bench-worlds"))
PRESET = os.environ.get("CEN_BENCH_PRESET", "large")  # e.g. demo, to try the benchmark quickly
ZOOM = 14


def _config(run: Path, n: int) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg.update(
        name=f"{PRESET}-{n}",
        output=str(run),
        world={"preset": PRESET, "seed": 0, "cache_dir": str(WORLDS)},
        grid={"kind": "chatearthnet", "zoom": ZOOM, "patch_size": 256},
        plan={"source": "area", "count": n, "seed": 0, "min_worldcover_fraction": 0.95},
        cluster={"kind": "local", "n_workers": 2, "threads_per_worker": 1, "memory_limit": "3GiB"},
        caption={"endpoints": [{"kind": "rules"}]},
    )
    cfg["ingest"].pop("replace_foreign", None)
    if FORMATS:
        cfg["export"] = {"formats": FORMATS}
    return cfg


def _run(work: Path, n: int) -> dict[str, Any]:
    run = work / f"run{n}"
    cfg = parse_config(_config(run, n))
    t = time.perf_counter()
    summary = as_json(run_job(cfg, Console(quiet=True), STAGES))
    planned = summary["plan"]["patches"]
    ingested = summary["ingest"]["ok"]
    exported = summary["export"]["exported"]
    print(
        f"{n} patches asked: {planned} planned, {ingested} ingested, {exported} exported; "
        f"{time.perf_counter() - t:.0f} s for the whole job"
    )
    prof = print_stages(summary, STAGES, planned)
    shutil.rmtree(run, ignore_errors=True)
    return prof


def main() -> None:
    t = time.perf_counter()
    ensure_world(WORLDS / f"{PRESET}-seed0", PRESET, 0)
    print(f"{PRESET} world ready in {time.perf_counter() - t:.0f} s")
    base = os.environ.get("CEN_BENCH_DIR")
    work = Path(tempfile.mkdtemp(prefix="cen-bench-world-", dir=base))
    try:
        profiles = {n: _run(work, n) for n in SIZES}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_memory_ratio(profiles, STAGES)


if __name__ == "__main__":
    main()
