"""The dataset job: every stage that exists, in order, on a Dask cluster.

Stages so far: world (synthetic sources, when configured) -> serve -> search.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cenlib.cluster import make_client
from cenlib.config import RunConfig
from cenlib.search import Aoi, run_search
from cenlib.stac.server import serve_world
from cenlib.world.build import count_steps, ensure_world, is_current, read_manifest


def world_dir(cfg: RunConfig) -> Path:
    return cfg.world.cache_dir / f"{cfg.world.preset}-seed{cfg.world.seed}"


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def build_or_reuse_world(cfg: RunConfig, console: Console) -> Path:
    path = world_dir(cfg)
    if is_current(path, cfg.world.preset, cfg.world.seed):
        console.print(f"world: reusing [bold]{path}[/]")
        return path
    console.print(f"world: building [bold]{path}[/]")
    with progress_bar(console) as bar:
        task = bar.add_task(f"world {cfg.world.preset}", total=count_steps(cfg.world.preset))
        ensure_world(path, cfg.world.preset, cfg.world.seed, lambda _m, n: bar.advance(task, n))
    return path


@contextlib.contextmanager
def source_urls(cfg: RunConfig, console: Console) -> Iterator[tuple[dict[str, str], list[Aoi]]]:
    """URLs of each source's STAC API (serving the synthetic world if asked) and the AOIs."""
    s2, wc = cfg.sources.sentinel2, cfg.sources.worldcover
    with contextlib.ExitStack() as stack:
        aois: list[Aoi] = []
        urls = {"sentinel2": s2.api, "worldcover": wc.api}
        if cfg.uses_world:
            world = build_or_reuse_world(cfg, console)
            served = stack.enter_context(serve_world(world))
            for src, sc in (("sentinel2", s2), ("worldcover", wc)):
                if sc.api == "world":
                    urls[src] = served[sc.dialect]
            for name, url in served.items():
                console.print(f"STAC API ({name}): {url}")
            if cfg.aoi == "world":
                m = read_manifest(world) or {}
                aois = [Aoi(a["name"], tuple(a["bbox"])) for a in m.get("areas", [])]
        if cfg.aoi != "world":
            aois = [Aoi(f"aoi-{i}", b) for i, b in enumerate(cfg.aoi)]
        elif not aois:
            raise ValueError(
                "aoi: 'world' needs sources served from the synthetic world; list bboxes instead"
            )
        yield urls, aois


def run_job(cfg: RunConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the job described by `cfg`; return the run summary (also written to summary.json)."""
    console = console or Console()
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    (out / "failures.jsonl").write_text("", encoding="utf-8")
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"name": cfg.name, "output": str(out)}
    with source_urls(cfg, console) as (urls, aois), make_client(cfg.cluster) as client:
        if cfg.cluster.kind == "address":
            # An external cluster may still be starting its workers.
            client.wait_for_workers(1, timeout=120)
        console.print(f"Dask dashboard: [link]{client.dashboard_link}[/link]")
        n_workers = len(client.scheduler_info().get("workers", {}))
        summary["cluster"] = {"workers": n_workers, "dashboard": client.dashboard_link}
        with progress_bar(console) as bar:
            task = bar.add_task("search", total=2 * len(aois))
            summary["search"] = run_search(
                cfg, urls, aois, client, out, lambda _k: bar.advance(task)
            )
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print_summary(out, summary, console)
    return summary


def print_summary(out: Path, summary: dict[str, Any], console: Console) -> None:
    s = summary["search"]
    console.print(
        f"search: {s['searches']} searches over {s['aois']} areas, {s['failed']} failed; "
        f"items: {s['items']}; cloudy scenes dropped: {s['dropped_cloudy']} "
        f"(cloud filter: {', '.join(s['cloud_filter']) or 'n/a'})"
    )
    table = Table(title=f"run directory {out}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            table.add_row(str(p.relative_to(out)), f"{p.stat().st_size:,}")
    console.print(table)
