"""The dataset job: every stage that exists, in order, on a Dask cluster.

Stages so far: world (synthetic sources, when configured) -> serve -> plan (WorldCover search
over the areas, then the draw) -> search (per group of planned patches) -> ingest (Zarr store).
``cen plan`` runs the first part, ``cen ingest`` the rest from the plan on disk, ``cen run`` both.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cenlib.analysis import analyze_store
from cenlib.captions.stage import CaptionError, run_captions
from cenlib.cluster import make_client
from cenlib.config import CaptionConfig, RunConfig
from cenlib.errors import CenError
from cenlib.grid import grid_for
from cenlib.ingest.sheet import contact_sheet
from cenlib.ingest.stage import failure_rows, run_ingest, store_url
from cenlib.io import clear_failures, replace_failures
from cenlib.plan.stage import keys_from_plan, make_plan, read_plan, write_plan
from cenlib.prompts.stage import run_prompts
from cenlib.search.stage import Aoi, patch_groups, read_items, run_search
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


STAGES = ("plan", "ingest", "analyze", "prompt", "caption")


class JobError(CenError, RuntimeError):
    """The run cannot go on (a missing plan, a store of another run): says what to do."""


def _plan(
    cfg: RunConfig, urls: dict[str, str], aois: list[Aoi], client: Any, console: Console
) -> dict[str, Any]:
    out = cfg.output
    wc_items: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    if cfg.plan.source == "area":
        with progress_bar(console) as bar:
            task = bar.add_task("plan: WorldCover search", total=len(aois))
            summary["search"] = run_search(
                cfg,
                urls,
                aois,
                client,
                out,
                lambda _k: bar.advance(task),
                sources=("worldcover",),
                subdir="search-areas",
            )
        if aois and summary["search"]["failed"] == len(aois):
            raise JobError(
                f"every WorldCover search failed ({cfg.sources.worldcover.collection} at "
                f"{urls['worldcover']}); see {out / 'failures.jsonl'}; check "
                "sources.worldcover.api and that the API is up"
            )
        wc_items = read_items(out / "search-areas", "worldcover")
    plan = make_plan(cfg, [(a.name, a.bbox) for a in aois], wc_items)
    write_plan(plan, out / "plan.parquet")
    summary["patches"] = len(plan)
    summary["by_dominant_class"] = {
        str(k): int(v) for k, v in plan["wc_dominant"].value_counts().sort_index().items()
    }
    return summary


def _ingest(
    cfg: RunConfig, urls: dict[str, str], client: Any, console: Console
) -> tuple[dict[str, Any], dict[str, Any]]:
    out = cfg.output
    path = out / "plan.parquet"
    if not path.is_file():
        raise JobError(f"no plan at {path}; run `cen plan CONFIG` (or `cen run CONFIG`) first")
    keys = keys_from_plan(read_plan(path), grid_for(cfg.grid))
    groups = [g for g, _ in patch_groups(keys)]
    with progress_bar(console) as bar:
        task = bar.add_task("search", total=2 * len(groups))
        search = run_search(cfg, urls, groups, client, out, lambda _k: bar.advance(task))
    for src, n in search["failed_by_source"].items():
        if groups and n == len(groups):
            sc = getattr(cfg.sources, src)
            raise JobError(
                f"every {src} search failed ({sc.collection} at {urls[src]}); see "
                f"{out / 'failures.jsonl'}; check sources.{src}.api and that the API is up"
            )
    s2, wc = read_items(out / "search", "sentinel2"), read_items(out / "search", "worldcover")
    with progress_bar(console) as bar:
        task = bar.add_task("ingest (shards)", total=None)

        def start(total: int, done: int) -> None:
            bar.update(task, total=total, completed=done)

        ingest = run_ingest(cfg, keys, s2, wc, urls, client, start, lambda _r: bar.advance(task))
    ingest["failure_rows"] = replace_failures(out, ["ingest"], failure_rows(ingest["store"]))
    sheet = contact_sheet(ingest["store"], out / "preview.png")
    if sheet is not None:
        console.print(f"preview of ingested patches: [bold]{sheet}[/]")
    return search, ingest


@contextlib.contextmanager
def caption_endpoints(cfg: RunConfig, console: Console) -> Iterator[CaptionConfig]:
    """The caption config with every ``smollm2`` endpoint served on loopback while in use."""
    eps = list(cfg.caption.endpoints)
    with contextlib.ExitStack() as stack:
        for i, e in enumerate(eps):
            if e.kind == "smollm2" and not e.base_url:
                from cenlib.captions.smollm2 import serve_smollm2

                with console.status("caption: starting the local SmolLM2 server"):
                    local = stack.enter_context(
                        serve_smollm2(log_path=cfg.output / "smollm2-server.log")
                    )
                eps[i] = e.model_copy(update={"base_url": local.base_url, "model": local.model})
                console.print(f"caption: SmolLM2 serving at {local.base_url}")
        yield cfg.caption.model_copy(update={"endpoints": tuple(eps)})


def _caption(
    cfg: RunConfig, client: Any, console: Console, max_cost: float | None
) -> dict[str, Any]:
    with (
        caption_endpoints(cfg, console) as caption,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[spend]}"),
            console=console,
        ) as bar,
    ):
        task = bar.add_task("caption", total=None, rate="", spend="")
        t0 = [time.perf_counter()]

        def start(todo: int, done: int) -> None:
            bar.update(task, total=todo, completed=0)
            t0[0] = time.perf_counter()

        def update(p: dict[str, float]) -> None:
            n = int(p.get("answered", 0) + p.get("dead", 0) + p.get("skipped", 0))
            rate = p.get("answered", 0) / max(time.perf_counter() - t0[0], 1e-9)
            bar.update(
                task,
                completed=n,
                rate=f"{rate:.1f} req/s",
                spend=f"${p.get('cost', 0.0):.4f} dead {int(p.get('dead', 0))}",
            )

        try:
            return run_captions(
                caption, cfg.output, client, max_cost=max_cost, on_start=start, on_update=update
            )
        except CaptionError as e:
            raise JobError(str(e)) from e


def run_job(
    cfg: RunConfig,
    console: Console | None = None,
    stages: tuple[str, ...] = STAGES,
    *,
    max_cost: float | None = None,
) -> dict[str, Any]:
    """Run the job described by `cfg`; return the run summary (also written to summary.json)."""
    console = console or Console()
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    if "plan" in stages:
        clear_failures(out)  # a new plan starts the run over; later stages replace their own
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"name": cfg.name, "output": str(out), "stages": list(stages)}
    needs_sources = bool({"plan", "ingest"} & set(stages))
    with contextlib.ExitStack() as stack:
        urls, aois = stack.enter_context(source_urls(cfg, console)) if needs_sources else ({}, [])
        client = stack.enter_context(make_client(cfg.cluster))
        if cfg.cluster.kind == "address":
            # An external cluster may still be starting its workers.
            client.wait_for_workers(1, timeout=120)
        console.print(f"Dask dashboard: [link]{client.dashboard_link}[/link]")
        n_workers = len(client.scheduler_info().get("workers", {}))
        summary["cluster"] = {"workers": n_workers, "dashboard": client.dashboard_link}
        if "plan" in stages:
            summary["plan"] = _plan(cfg, urls, aois, client, console)
        if "ingest" in stages:
            summary["search"], summary["ingest"] = _ingest(cfg, urls, client, console)
        if "analyze" in stages:
            with console.status("analyze: land-cover statistics per patch"):
                summary["analyze"] = analyze_store(
                    store_url(cfg),
                    client,
                    out,
                    cfg.analysis.batch,
                    cfg.analysis.layout_block if cfg.analysis.layout else 0,
                )
        if "prompt" in stages:
            with console.status(f"prompt: {cfg.prompt.style} messages"):
                summary["prompt"] = run_prompts(cfg, store_url(cfg), client)
        if "caption" in stages:
            summary["caption"] = _caption(cfg, client, console, max_cost)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print_summary(out, summary, console)
    return summary


def incomplete(summary: dict[str, Any]) -> str:
    """Why a run did not finish its work (failed searches, caption dead letters, prompts the
    budget left), or "" when it did; ``cen`` and ``jobs/`` exit 1 when this is not empty."""
    why = []
    failed = summary.get("search", {}).get("failed", 0) + summary.get("plan", {}).get(
        "search", {}
    ).get("failed", 0)
    if failed:
        why.append(f"{failed} searches failed (see failures.jsonl)")
    cap = summary.get("caption", {})
    if cap.get("dead_letters"):
        why.append(f"{cap['dead_letters']} caption dead letters (see dead_letters.jsonl)")
    if cap.get("skipped"):
        why.append(f"{cap['skipped']} prompts left by the budget (raise caption.max_cost)")
    return "; ".join(why)


def _first_caption(path: Path) -> tuple[str, str] | None:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        line = f.readline()
    if not line.strip():
        return None
    rec = json.loads(line)
    return str(rec["patch_id"]), str(rec["caption"])


def print_summary(out: Path, summary: dict[str, Any], console: Console) -> None:
    if "plan" in summary:
        p = summary["plan"]
        console.print(f"plan: {p['patches']} patches; dominant classes {p['by_dominant_class']}")
    if "search" in summary:
        s = summary["search"]
        console.print(
            f"search: {s['searches']} searches over {s['groups']} groups, {s['failed']} failed; "
            f"items: {s['items']}; cloudy scenes dropped: {s['dropped_cloudy']} "
            f"(cloud filter: {', '.join(s['cloud_filter']) or 'n/a'})"
        )
    if "ingest" in summary:
        i = summary["ingest"]
        console.print(
            f"ingest: {i['ok']} patches ok, {i['failed']} failed of {i['patches']}; shards "
            f"{i['shards_written']} written, {i['shards_skipped']} already done; "
            f"{i['bytes_written'] / 2**20:.1f} MiB in {i['seconds']} s; "
            f"{i['failure_rows']} rows in failures.jsonl"
        )
    if "analyze" in summary:
        a = summary["analyze"]
        console.print(f"analyze: {a['ok']} patches in {a['seconds']} s -> {a['table']}")
    if "prompt" in summary:
        p = summary["prompt"]
        console.print(f"prompt: {p['prompts']} prompts ({p['style']}) -> {p['file']}")
    if "caption" in summary:
        c = summary["caption"]
        console.print(
            f"caption: {c['captioned']} of {c['patches']} patches captioned "
            f"({c['answered_this_run']} answered now, {c['already_answered']} before); "
            f"{c['dead_letters']} dead letters, {c['skipped']} left by the budget; "
            f"spent ${c['cost_this_run']:.4f} now, ${c['cost_total']:.4f} in all -> "
            f"{c['files']['captions']}"
        )
        first = _first_caption(Path(c["files"]["captions"]))
        if first:
            console.print(f"  e.g. {first[0]}: [italic]{first[1][:300]}[/]")
    table = Table(title=f"run directory {out}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        if p.is_file() and ".zarr" not in rel and not rel.startswith(("prompts/", "responses/")):
            table.add_row(str(p.relative_to(out)), f"{p.stat().st_size:,}")
    console.print(table)
