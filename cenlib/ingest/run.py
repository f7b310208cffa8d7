"""The ingest stage's entry: the plan's patches searched, read and written to the store.

Reads the plan, searches both sources for the groups of nearby planned patches (the search
stage), ingests every patch (skipping shards already done), records the tolerated failures in
the failures table and draws a contact sheet of what it wrote.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from distributed import Client
from rich.console import Console

from cenlib.config import RunConfig
from cenlib.grid import grid_for
from cenlib.ingest.sheet import contact_sheet
from cenlib.ingest.stage import IngestSummary, failure_rows, ingest_patches
from cenlib.io import replace_failures
from cenlib.plan import keys_from_plan, plan_path, read_plan
from cenlib.progress import progress_bar
from cenlib.search import read_items, search_patches

PREVIEW = "preview.png"


def run_ingest(
    cfg: RunConfig, client: Client, urls: dict[str, str], console: Console | None = None
) -> IngestSummary:
    """Search and ingest every planned patch of the run; bars on ``console`` if given."""
    out = cfg.output
    keys = keys_from_plan(read_plan(plan_path(out)), grid_for(cfg.grid))
    with progress_bar(console) as bar:
        task = bar.add_task("search", total=None)

        def searched(_key: str) -> None:
            bar.advance(task)

        search = search_patches(cfg, urls, keys, client, searched)
    s2, wc = read_items(out / "search", "sentinel2"), read_items(out / "search", "worldcover")
    with progress_bar(console) as bar:
        task = bar.add_task("ingest (shards)", total=None)

        def start(total: int, done: int) -> None:
            bar.update(task, total=total, completed=done)

        def done(_r: dict[str, Any]) -> None:
            bar.advance(task)

        summary = ingest_patches(cfg, keys, s2, wc, urls, client, start, done)
    rows = replace_failures(out, ["ingest"], failure_rows(summary.store))
    sheet = contact_sheet(summary.store, out / PREVIEW)
    return dataclasses.replace(summary, failure_rows=rows, preview=str(sheet or ""), search=search)
