"""End to end: `cen run` on the synthetic world, on a LocalCluster of worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-do-not-leak-4242"


def _run(
    tmp_path: Path, demo_world: Path, **overrides: object
) -> tuple[subprocess.CompletedProcess[str], Path]:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["output"] = str(tmp_path / "run")
    cfg["world"]["cache_dir"] = str(demo_world.parent)  # reuse the session's demo world
    cfg.update(overrides)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "COLUMNS": "200"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cen"), "run", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    return proc, tmp_path / "run"


def test_demo_job_end_to_end(tmp_path: Path, demo_world: Path) -> None:
    proc, run = _run(tmp_path, demo_world)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Dask dashboard: http://" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cluster"]["workers"] == 2
    s = summary["search"]
    assert s["aois"] == 3 and s["searches"] == 6 and s["failed"] == 0
    assert s["cloud_filter"] == ["client"]
    lines = (run / "search" / "sentinel2.ndjson").read_text().splitlines()
    assert len(lines) == s["items"]["sentinel2"] > 0
    assert all(json.loads(ln)["properties"]["eo:cloud_cover"] <= 30 for ln in lines)
    by_aoi = json.loads((run / "search" / "by_aoi.json").read_text())
    assert set(by_aoi) == {"dolomites", "sao-luis", "finnmark"}
    assert all(v["worldcover"] for v in by_aoi.values())
    assert (run / "failures.jsonl").read_text() == ""
    # Secrets never reach outputs or logs.
    for p in run.rglob("*"):
        if p.is_file():
            assert SECRET not in p.read_text(errors="replace"), p
    assert SECRET not in proc.stdout + proc.stderr


def test_unreachable_source_is_recorded_and_nothing_else_lost(
    tmp_path: Path, demo_world: Path
) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    sources = cfg["sources"]
    sources["sentinel2"] = {"api": "http://127.0.0.1:9", "collection": "sentinel-2-l2a"}
    proc, run = _run(tmp_path, demo_world, sources=sources)
    assert proc.returncode == 1
    failures = [json.loads(ln) for ln in (run / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 3
    assert {f["aoi"] for f in failures} == {"dolomites", "sao-luis", "finnmark"}
    assert all(
        f["url"] == "http://127.0.0.1:9" and f["collection"] == "sentinel-2-l2a" for f in failures
    )
    assert all("server running" in f["error"] for f in failures)
    # The WorldCover searches that worked are kept.
    assert len((run / "search" / "worldcover.ndjson").read_text().splitlines()) == 4


def test_job_on_an_existing_scheduler(tmp_path: Path, demo_world: Path) -> None:
    """cluster kind 'address': a scheduler and a worker started as separate processes."""
    from cenlib.stac.server import free_port

    port = free_port()
    bindir = Path(sys.executable).parent
    sched = subprocess.Popen(
        [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
         "--nworkers", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        address = f"tcp://127.0.0.1:{port}"
        proc, run = _run(tmp_path, demo_world, cluster={"kind": "address", "address": address})
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summary = json.loads((run / "summary.json").read_text())
        assert summary["cluster"]["workers"] == 1
        assert summary["search"]["failed"] == 0 and summary["search"]["items"]["worldcover"] == 4
    finally:
        for p in (worker, sched):
            p.terminate()
            p.wait(timeout=30)
