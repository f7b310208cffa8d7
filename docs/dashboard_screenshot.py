"""Make docs/dashboard.png: the Dask dashboard's status page (task stream, progress, memory)
while the demo ingests, in headless Chromium (`make chromium`).

    .venv/bin/python docs/dashboard_screenshot.py [--out docs/dashboard.png] [--wait 20]

Runs the demo configuration into a temporary run directory with its dashboard on a free port,
waits until the plan is done (profile/plan.html appears) and the ingest's tasks have run for
``--wait`` seconds, and saves a screenshot of http://127.0.0.1:PORT/status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cenlib.stac.server import free_port

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    ap.add_argument("--wait", type=float, default=20.0, help="seconds into the ingest")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium on PATH: `make chromium`")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
        cfg["output"] = f"{tmp}/run"
        cfg["world"]["cache_dir"] = str(REPO / ".cache" / "worlds")
        cfg["cluster"]["dashboard_address"] = f"127.0.0.1:{port}"
        config = Path(tmp) / "demo.yaml"
        config.write_text(yaml.safe_dump(cfg))
        job = subprocess.Popen(
            [str(Path(sys.executable).parent / "cen"), "run", str(config), "--until", "analyze"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
        )  # fmt: skip
        try:
            marker = Path(tmp) / "run" / "profile" / "plan.html"
            deadline = time.monotonic() + 600
            while not marker.is_file():
                if job.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"the demo ended (rc={job.returncode}) before its ingest began")
                time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/status", wait_until="networkidle")
                # The ingest's tasks running for --wait seconds: a task stream with finished
                # and running shards in it (the plots are canvases; the counts come as JSON).
                counts = f"http://127.0.0.1:{port}/json/counts.json"
                busy_since = None
                while job.poll() is None and time.monotonic() < deadline:
                    busy = json.loads(page.request.get(counts).text())["processing"] > 0
                    if busy and busy_since is None:
                        busy_since = time.monotonic()
                    if busy and busy_since and time.monotonic() - busy_since >= args.wait:
                        break
                    page.wait_for_timeout(500)
                else:
                    sys.exit("the ingest ended before --wait seconds of it went by")
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            os.killpg(job.pid, signal.SIGTERM)
            job.wait(timeout=60)
    print(f"{args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
