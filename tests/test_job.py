"""End to end: `cen run` on the synthetic world, on a LocalCluster of worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
import yaml

from cenlib.plan.stage import read_plan

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-do-not-leak-4242"
DOLOMITES = [11.97, 46.56, 12.03, 46.61]  # a few patches of the demo world: a quick run


def _run(
    tmp_path: Path, demo_world: Path, *args: str, name: str = "run", **overrides: object
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``cen run`` (or ``cen ARGS`` when ``args`` start with a subcommand) on the demo config
    with ``overrides``, output in ``tmp_path / name``."""
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cfg["output"] = str(tmp_path / name)
    cfg["world"]["cache_dir"] = str(demo_world.parent)  # reuse the session's demo world
    cfg.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "COLUMNS": "200"}
    command = [args[0], str(path), *args[1:]] if args else ["run", str(path)]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cen"), *command],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    return proc, tmp_path / name


@pytest.mark.e2e
def test_demo_job_end_to_end(tmp_path: Path, demo_world: Path) -> None:
    proc, run = _run(tmp_path, demo_world)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Dask dashboard: http://" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cluster"]["workers"] == 2
    plan = read_plan(run / "plan.parquet")
    assert summary["plan"]["patches"] == len(plan) > 50
    assert set(plan["aoi"]) == {"dolomites", "sao-luis", "finnmark"}
    s = summary["search"]
    assert s["failed"] == 0 and s["cloud_filter"] == ["client"]
    assert s["searches"] == 2 * s["groups"] < len(plan)  # grouped, never one per patch
    lines = (run / "search" / "sentinel2.ndjson").read_text().splitlines()
    assert len(lines) == s["items"]["sentinel2"] > 0
    assert all(json.loads(ln)["properties"]["eo:cloud_cover"] <= 30 for ln in lines)
    # Every planned patch is in the store exactly once, in plan order.
    ing = summary["ingest"]
    ds = xr.open_zarr(run / "dataset.zarr", consolidated=False)
    assert list(ds.patch_id.values) == list(plan["patch_id"])
    ok = ds.status.values == "ok"
    assert ing["ok"] == ok.sum() >= 0.8 * len(plan) and ing["ok"] + ing["failed"] == len(plan)
    assert (ds.cloud_fraction.values[ok] <= 0.05).all()
    assert (ds.nodata_fraction.values[ok] <= 0.01).all()
    failures = [json.loads(ln) for ln in (run / "failures.jsonl").read_text().splitlines()]
    failed_ids = {f["patch_id"] for f in failures if f["stage"] == "ingest"}
    assert failed_ids >= set(ds.patch_id.values[~ok])
    assert all(f["reason"] for f in failures)
    assert (run / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Analysis: one row per planned patch; prompts: one per ok patch, in store order.
    assert summary["analyze"]["ok"] == ing["ok"]
    prompts = [json.loads(ln) for ln in (run / "prompts.jsonl").read_text().splitlines()]
    assert [p["patch_id"] for p in prompts] == list(ds.patch_id.values[ok])
    assert summary["prompt"]["prompts"] == len(prompts)
    # Captions: the demo's rules captioner answers every prompt once, zero cost, no dead letter.
    caps = [json.loads(ln) for ln in (run / "captions.jsonl").read_text().splitlines()]
    assert [c["patch_id"] for c in caps] == [p["patch_id"] for p in prompts]
    assert all(c["endpoint"] == "rules/cen-rules@2" and len(c["caption"]) > 100 for c in caps)
    c = summary["caption"]
    assert c["captioned"] == len(prompts) and c["dead_letters"] == 0 and c["cost_total"] == 0
    assert (run / "dead_letters.jsonl").read_text() == ""
    assert "e.g. " in proc.stdout  # the summary shows a caption
    # It ends with the dataset and its report, and the job's clock has every stage.
    assert summary["stages"][-2:] == ["export", "report"]
    assert set(summary["wall"]) == set(summary["stages"]) and summary["report"]["patches"] > 0
    assert (run / "export" / "chatearthnet" / "README.md").is_file()
    said = " ".join(proc.stdout.split())
    assert f"dataset: {run / 'export' / 'chatearthnet'}" in said
    assert f"report: {run / 'report.html'}" in said and (run / "report.html").is_file()
    # Every stage on the cluster has its profile: a performance report and its figures.
    prof = summary["profile"]
    assert list(prof) == summary["stages"][:-1]  # the report is written after the cluster
    shards = -(-len(plan) // 16)  # ingest.shard_patches
    assert prof["ingest"]["tasks"] >= shards and prof["ingest"]["erred"] == 0
    assert prof["ingest"]["bytes_written"] > 0 and prof["ingest"]["peak_memory"] > 0
    assert prof["ingest"]["top_tasks"][0][0] == "ingest-shard"
    for stage, f in prof.items():
        assert (run / f["report"]).is_file() and f["report"] == f"profile/{stage}.html"
    assert "profile (reports in" in proc.stdout
    # Secrets never reach outputs or logs.
    for p in run.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.e2e
def test_unreachable_source_stops_the_run_and_keeps_the_record(
    tmp_path: Path, demo_world: Path
) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    sources = cfg["sources"]
    sources["sentinel2"] = {"api": "http://127.0.0.1:9", "collection": "sentinel-2-l2a"}
    proc, run = _run(tmp_path, demo_world, sources=sources)
    assert proc.returncode == 2
    assert "every sentinel2 search failed" in proc.stderr and "sources.sentinel2.api" in proc.stderr
    failures = [json.loads(ln) for ln in (run / "failures.jsonl").read_text().splitlines()]
    assert failures and all(f["source"] == "sentinel2" for f in failures)
    assert all(
        f["url"] == "http://127.0.0.1:9" and f["collection"] == "sentinel-2-l2a" for f in failures
    )
    assert all("server running" in f["error"] for f in failures)
    # The plan and the WorldCover searches that worked are kept.
    assert (run / "plan.parquet").is_file()
    assert len((run / "search" / "worldcover.ndjson").read_text().splitlines()) == 4


@pytest.mark.e2e
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
        assert summary["ingest"]["ok"] > 0
    finally:
        for p in (worker, sched):
            p.terminate()
            p.wait(timeout=30)


def test_ingest_alone_keeps_the_plans_failure_records(tmp_path: Path) -> None:
    from cenlib.io import clear_failures, read_failures, replace_failures

    rows = [{"stage": s, "reason": f"r-{s}"} for s in ("search-areas", "search", "ingest")]
    path = tmp_path / "failures.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Ingest rewrites its own phases' records only; the plan's search records stay.
    replace_failures(tmp_path, ["search"], [{"stage": "search", "reason": "again"}])
    replace_failures(tmp_path, ["ingest"], [])
    assert [(r["stage"], r["reason"]) for r in read_failures(tmp_path)] == [
        ("search-areas", "r-search-areas"),
        ("search", "again"),
    ]
    with pytest.raises(ValueError, match="outside"):
        replace_failures(tmp_path, ["ingest"], [{"stage": "search", "reason": "x"}])
    clear_failures(tmp_path)  # a new plan starts the run over
    assert path.read_text() == ""


@pytest.mark.e2e
def test_run_until_prompt_then_caption_those_prompts_in_another_run(
    tmp_path: Path, demo_world: Path
) -> None:
    """`cen run --until prompt` stops after the prompts; `cen caption --prompts RUN` captions
    them in a new run directory (another endpoint setup, same prompts)."""
    proc, first = _run(tmp_path, demo_world, "run", "--until", "prompt", aoi=[DOLOMITES])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((first / "summary.json").read_text())
    assert summary["stages"] == ["plan", "ingest", "analyze", "prompt"] and "caption" not in summary
    assert (first / "prompts.jsonl").is_file() and not (first / "captions.jsonl").exists()
    proc, second = _run(tmp_path, demo_world, "caption", "--prompts", str(first), name="other")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prompts = (first / "prompts.jsonl").read_bytes()
    assert (second / "prompts.jsonl").read_bytes() == prompts
    caps = [json.loads(ln) for ln in (second / "captions.jsonl").read_text().splitlines()]
    assert len(caps) == len(prompts.splitlines()) > 0
    assert not (second / "plan.parquet").exists()  # nothing but the caption stage ran there
    proc, _ = _run(tmp_path, demo_world, "run", "--until", "publish", name="bad")
    assert proc.returncode == 2 and "--until 'publish' is not a stage" in proc.stderr


def test_a_later_command_keeps_the_records_of_the_stages_before_it(tmp_path: Path) -> None:
    from cenlib.job import earlier_records, write_summary

    first = {
        "name": "r",
        "stages": ["plan", "ingest", "analyze", "prompt", "caption", "verify"],
        "wall": {s: 1.0 for s in ("plan", "ingest", "analyze", "prompt", "caption", "verify")},
        "profile": {"ingest": {"tasks": 4}, "caption": {"tasks": 2}},
        "plan": {"patches": 9},
        "search": {"failed": 0},
        "ingest": {"ok": 8},
        "analyze": {"ok": 8},
        "prompt": {"prompts": 8},
        "caption": {"captioned": 8},
        "verify": {"verified": 8},
        "seconds": 6.0,
    }
    (tmp_path / "summary.json").write_text(json.dumps(first))
    # `cen caption CONFIG`: plan..prompt stay; caption is replaced; verify (of the old
    # captions) goes.
    earlier = earlier_records(tmp_path, ("caption",))
    now = {"name": "r", "stages": ["caption"], "wall": {"caption": 2.0}, "profile": {}}
    write_summary(tmp_path, {**now, "caption": {"captioned": 7}, "seconds": 2.0}, earlier)
    got = json.loads((tmp_path / "summary.json").read_text())
    assert got["stages"] == ["caption"]
    assert got["earlier"] == ["plan", "ingest", "analyze", "prompt"]
    assert got["caption"] == {"captioned": 7} and "verify" not in got
    assert [got[k] for k in ("plan", "search", "ingest", "prompt")] == [
        first[k] for k in ("plan", "search", "ingest", "prompt")
    ]
    assert got["wall"] == {
        "plan": 1.0,
        "ingest": 1.0,
        "analyze": 1.0,
        "prompt": 1.0,
        "caption": 2.0,
    }
    assert got["profile"] == {"ingest": {"tasks": 4}} and got["seconds"] == 2.0
    # A run from the plan on starts over; no summary.json (or a broken one) carries nothing.
    assert earlier_records(tmp_path, ("plan", "ingest"))["earlier"] == []
    (tmp_path / "summary.json").write_text("{not json")
    assert earlier_records(tmp_path, ("export",)) == {}
