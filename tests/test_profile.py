"""Stage profiles on a real LocalCluster: the span's tasks, the workers' I/O, the report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from distributed import Client

from cenlib.profile import IDLE, profile_path, profile_table, stage_profile

BLOCK = 3_000_000


def _write_block(path: str, i: int) -> int:
    data = os.urandom(BLOCK)
    with open(f"{path}/block-{i}.bin", "wb") as f:
        f.write(data)
    t = time.perf_counter()
    while time.perf_counter() - t < 0.2:  # some CPU for the metrics to see
        sum(range(1000))
    return len(data)


def _read_block(path: str, i: int) -> int:
    with open(f"{path}/block-{i}.bin", "rb") as f:
        return len(f.read())


def test_a_stage_profile_counts_its_tasks_io_and_memory(
    dask_client: Client, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with stage_profile(dask_client, "write", tmp_path) as prof:
        futs = dask_client.map(
            _write_block, [str(data)] * 6, range(6), key=[f"wb-{i}" for i in range(6)]
        )
        assert sum(dask_client.gather(futs)) == 6 * BLOCK
        del futs
    f = prof.figures
    assert f["tasks"] == 6 and f["erred"] == 0
    assert 6 * BLOCK <= f["bytes_written"] < 6 * BLOCK + 2_000_000
    assert f["peak_memory"] > 50_000_000  # a worker process holds more than 50 MB
    assert f["spill"] == 0
    assert f["top_tasks"][0][0] == "wb" and f["top_tasks"][0][1] >= 6 * 0.2 * 0.9
    activities = dict(f["top_activities"])
    # Each task runs at least 0.2 s on its thread, on CPU or off it (a loaded machine).
    assert activities["thread-cpu"] + activities["thread-noncpu"] >= 6 * 0.2 * 0.9
    report = profile_path(tmp_path, "write")
    assert f["report"] == "profile/write.html" and report.is_file()
    html = report.read_text()
    assert "Bokeh" in html and "cdn.bokeh.org" not in html  # inline: opens offline

    with stage_profile(dask_client, "read", tmp_path) as prof2:
        futs = dask_client.map(
            _read_block, [str(data)] * 6, range(6), key=[f"rb-{i}" for i in range(6)]
        )
        assert dask_client.gather(futs) == [BLOCK] * 6
        del futs
    g = prof2.figures
    assert g["tasks"] == 6
    assert g["bytes_read"] >= 6 * BLOCK and g["bytes_written"] < BLOCK
    assert g["top_tasks"][0][0] == "rb"
    # The write stage's tasks are not counted again in the read stage's span.
    assert "wb" not in dict(g["top_tasks"])


def test_a_stage_with_no_tasks_and_the_table(dask_client: Client, tmp_path: Path) -> None:
    with stage_profile(dask_client, "empty", tmp_path) as prof:
        pass
    f = prof.figures
    assert (f["tasks"], f["erred"], f["result_bytes"], f["top_tasks"]) == (0, 0, 0, [])
    assert f["peak_memory"] > 0 and prof.report.is_file()  # the workers are still measured
    table = profile_table({"empty": prof.figures, "x": {"wall": 2.0, "top_activities": [
        [IDLE, 9.0], ["thread-cpu", 1.5]]}}, tmp_path)  # fmt: skip
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "thread-cpu 1.5 s" in text and IDLE not in text
