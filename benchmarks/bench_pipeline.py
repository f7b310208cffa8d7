"""The whole pipeline on 2 workers against the reference approach, same patches, same run.

The reference (ChatEarthNet's published scripts) handles one patch after another in one
process and sends one chat request at a time. Here it is the same job run so: one worker
process with one thread, one patch per ingest shard and analysis task, one read at a time,
one request per caption task, one request in flight (and no fixed sleeps, which only favours
it). The candidate is the default configuration on a LocalCluster of 2 worker processes with
16 requests in flight. Both caption through the tests' OpenAI-compatible server in its own
process, answering after ``CEN_BENCH_LLM_LATENCY`` seconds (default 1.0: a short ChatGPT
answer). Prints wall time per stage and the ratios; asserts nothing beyond "same patches".

    CEN_BENCH_AOI=dolomites|world  (default dolomites: a few dozen patches)
    CEN_BENCH_LLM_LATENCY=1.0
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
AOIS = {"dolomites": [[11.97, 46.56, 12.10, 46.66]], "world": "world"}
AOI = os.environ.get("CEN_BENCH_AOI", "dolomites")
LATENCY = float(os.environ.get("CEN_BENCH_LLM_LATENCY", "1.0"))
KEY_ENV = "CEN_BENCH_API_KEY"
STAGES = ("plan", "ingest", "analyze", "prompt", "caption", "verify", "export")


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--latency", str(LATENCY)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def config(tmp: Path, name: str, base_url: str, sequential: bool) -> Path:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg.update(name=name, output=str(tmp / name), aoi=AOIS[AOI])
    cfg["world"]["cache_dir"] = str(ROOT / ".cache" / "worlds")
    endpoint = {
        "kind": "openai", "name": "fake", "base_url": base_url, "model": "fake-model",
        "api_key_env": KEY_ENV, "requests_per_minute": None,
        "max_concurrency": 1 if sequential else 16,
    }  # fmt: skip
    cfg["caption"] = {"endpoints": [endpoint], "batch_size": 1 if sequential else 64}
    # The fake model's answers fail verification (and get repair requests, the same in both
    # runs): export them anyway, the benchmark measures the pipeline, not the captions.
    cfg["export"] = {"include": ["pass", "repaired", "failed"]}
    if sequential:
        cfg["cluster"] = {"kind": "local", "n_workers": 1, "threads_per_worker": 1,
                          "memory_limit": "4GiB"}  # fmt: skip
        cfg["ingest"] |= {"shard_patches": 1, "io_concurrency": 1}
        cfg["analysis"] = {"batch": 1}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(path: Path) -> dict[str, Any]:
    env = {**os.environ, KEY_ENV: "sk-bench", "COLUMNS": "160"}
    t = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "cen"), "run", str(path), "--until", "export"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"{path.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr}")
    out = Path(yaml.safe_load(path.read_text())["output"])
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    summary["total"] = time.perf_counter() - t
    summary["patch_ids"] = [
        json.loads(line)["patch_id"] for line in (out / "captions.jsonl").open() if line.strip()
    ]
    return summary


def main() -> None:
    server, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = Path(tmp_s)
            # Warm the world cache and the page cache once, outside both timings.
            run(config(tmp, "warm", url, sequential=False))
            reference = run(config(tmp, "reference", url, sequential=True))
            pipeline = run(config(tmp, "pipeline", url, sequential=False))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert sorted(reference["patch_ids"]) == sorted(pipeline["patch_ids"]), "different patches"
    n = len(pipeline["patch_ids"])
    print(f"{n} patches captioned (aoi {AOI}), LLM latency {LATENCY} s per request")
    print(f"{'stage':<8} {'reference s':>12} {'pipeline s':>11} {'speed-up':>9}")
    for stage in STAGES:
        a, b = reference["wall"].get(stage, 0.0), pipeline["wall"].get(stage, 0.0)
        ratio = f"x{a / b:.2f}" if b else "-"
        print(f"{stage:<8} {a:12.1f} {b:11.1f} {ratio:>9}")
    a, b = reference["total"], pipeline["total"]
    print(f"{'total':<8} {a:12.1f} {b:11.1f} {'x' + format(a / b, '.2f'):>9}  (with start-up)")
    print(f"patches/s: reference {n / a:.2f}, pipeline {n / b:.2f}")


if __name__ == "__main__":
    main()
