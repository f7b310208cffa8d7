"""The dataset job: the stages' entries in order, on a Dask cluster, and the run summary.

world (synthetic sources, when configured) -> serve -> plan -> ingest (search per group of
planned patches, then the Zarr store) -> analyze -> prompt -> caption. Each stage owns its
outputs, failure records and typed summary; this module only starts what they share (the
sources, the cluster, a local SmolLM2), calls them and prints their summaries.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from distributed import Client
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

from cenlib.analysis import run_analysis
from cenlib.captions import CAPTIONS, CaptionError, CaptionSummary, run_captions
from cenlib.cluster import external, make_client
from cenlib.config import CaptionConfig, RunConfig
from cenlib.errors import CenError
from cenlib.ingest import run_ingest
from cenlib.io import clear_failures, write_atomic, write_text_atomic
from cenlib.plan import plan_path, run_plan
from cenlib.profile import profile_table, stage_profile
from cenlib.progress import progress_bar
from cenlib.prompts import PROMPTS, run_prompts
from cenlib.search import Aoi
from cenlib.stac.server import serve_world
from cenlib.summary import Summary
from cenlib.world.build import count_steps, ensure_world, is_current, read_manifest

STAGES = ("plan", "ingest", "analyze", "prompt", "caption", "verify", "export", "report")


class JobError(CenError, RuntimeError):
    """The run cannot go on (a missing plan, a store of another run): says what to do."""


def world_dir(cfg: RunConfig) -> Path:
    return cfg.world.cache_dir / f"{cfg.world.preset}-seed{cfg.world.seed}"


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
def source_urls(
    cfg: RunConfig, console: Console, planning: bool = True
) -> Iterator[tuple[dict[str, str], list[Aoi]]]:
    """URLs of each source's STAC API (serving the synthetic world if asked) and the AOIs
    (needed only when ``planning`` an area plan: a list plan and ingest never read them)."""
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
        elif not aois and planning and cfg.plan.source == "area":
            raise JobError(
                "aoi: 'world' (the default) needs sources served from the synthetic world; "
                "give aoi as a list of [min_lon, min_lat, max_lon, max_lat] boxes, or plan from "
                "a list file (plan.source: list)"
            )
        yield urls, aois


@contextlib.contextmanager
def caption_endpoints(cfg: RunConfig, console: Console) -> Iterator[CaptionConfig]:
    """The caption config with every ``smollm2`` endpoint served on loopback while in use."""
    eps = list(cfg.caption.endpoints)
    with contextlib.ExitStack() as stack:
        for i, e in enumerate(eps):
            if e.kind == "smollm2" and not e.base_url:
                from cenlib.captions import serve_smollm2

                with console.status("caption: starting the local SmolLM2 server"):
                    local = stack.enter_context(
                        serve_smollm2(log_path=cfg.output / "smollm2-server.log")
                    )
                eps[i] = e.model_copy(update={"base_url": local.base_url, "model": local.model})
                console.print(f"caption: SmolLM2 serving at {local.base_url}")
        yield cfg.caption.model_copy(update={"endpoints": tuple(eps)})


def _caption(
    cfg: RunConfig, caption: CaptionConfig, client: Any, console: Console, max_cost: float | None
) -> CaptionSummary:
    with (
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


def _verify(
    cfg: RunConfig, caption: CaptionConfig, client: Any, console: Console, max_cost: float | None
) -> Any:
    from cenlib.verify import VerifyError, run_verify

    with console.status("verify: checking captions") as st:

        def on_round(r: int, n: int) -> None:
            st.update(f"verify: repair round {r}: {n} captions back to the pool")

        try:
            return run_verify(cfg, client, caption=caption, max_cost=max_cost, on_round=on_round)
        except (VerifyError, CaptionError) as e:
            raise JobError(str(e)) from e


def stages_until(until: str) -> tuple[str, ...]:
    """The stages from the first up to ``until`` (a name of :data:`STAGES`)."""
    if until not in STAGES:
        raise JobError(f"--until {until!r} is not a stage; choose one of {', '.join(STAGES)}")
    return STAGES[: STAGES.index(until) + 1]


def use_prompts(cfg: RunConfig, source: Path) -> Path:
    """Copy another run's ``prompts.jsonl`` into this run (to caption it with other endpoints);
    the caption stage's keys then follow the copied file's content."""
    source = Path(source)
    if source.is_dir():
        source = source / PROMPTS
    if not source.is_file():
        raise JobError(f"--prompts {source}: no such file; give a run directory or its {PROMPTS}")
    target = cfg.output / PROMPTS
    if source.resolve() != target.resolve():
        cfg.output.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as f:  # streamed: a prompts file can be hundreds of MB
            write_atomic(target, iter(lambda: f.read(1 << 20), b""))
    return target


def run_job(
    cfg: RunConfig,
    console: Console | None = None,
    stages: tuple[str, ...] = STAGES,
    *,
    max_cost: float | None = None,
    prompts_from: Path | None = None,
) -> dict[str, Any]:
    """Run ``stages`` of the job described by ``cfg`` in order; return the run summary (the
    stages' typed summaries; also written to summary.json)."""
    console = console or Console()
    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    if "plan" in stages:
        clear_failures(out)  # a new plan starts the run over; later stages replace their own
    if prompts_from is not None:
        use_prompts(cfg, prompts_from)
    t0 = time.perf_counter()
    earlier = earlier_records(out, stages)
    summary: dict[str, Any] = {"name": cfg.name, "output": str(out), "stages": list(stages)}
    wall: dict[str, float] = {}  # seconds per stage, as the job saw them
    summary["wall"] = wall
    profiles: dict[str, dict[str, Any]] = {}  # per stage: tasks, bytes, memory, activities
    summary["profile"] = profiles
    needs_sources = bool({"plan", "ingest"} & set(stages))
    with contextlib.ExitStack() as stack:
        urls, aois = (
            stack.enter_context(source_urls(cfg, console, "plan" in stages))
            if needs_sources
            else ({}, [])
        )
        client = stack.enter_context(make_client(cfg.cluster))
        if external(cfg.cluster):  # its workers may still be starting (or queued in SLURM)
            client.wait_for_workers(1, timeout=cfg.cluster.worker_timeout)
        console.print(f"Dask dashboard: [link]{client.dashboard_link}[/link]")
        n_workers = len(client.scheduler_info().get("workers", {}))
        summary["cluster"] = {"workers": n_workers, "dashboard": client.dashboard_link}
        timed = functools.partial(_profiled, wall, profiles, client, out)
        if "plan" in stages:
            with timed("plan"), progress_bar(console) as bar:
                task = bar.add_task("plan: WorldCover search", total=None)

                def searching(n: int) -> Callable[[str], None]:
                    bar.update(task, total=n)
                    return lambda _key: bar.advance(task)

                summary["plan"] = run_plan(cfg, client, urls, aois, searching)
        if "ingest" in stages:
            if not plan_path(out).is_file():
                raise JobError(
                    f"no plan at {plan_path(out)}; run `cen plan CONFIG` "
                    "(or `cen run CONFIG`) first"
                )
            with timed("ingest"):  # with its Sentinel-2 search
                ingest = run_ingest(cfg, client, urls, console)
            summary["search"], summary["ingest"] = ingest.search, ingest
        if "analyze" in stages:
            with timed("analyze"), console.status("analyze: land-cover statistics per patch"):
                summary["analyze"] = run_analysis(cfg, client)
        if "prompt" in stages:
            with timed("prompt"), console.status(f"prompt: {cfg.prompt.style} messages"):
                summary["prompt"] = run_prompts(cfg, client)
        # One pool (and one local SmolLM2 server) for the captions and their repairs.
        pool = (
            stack.enter_context(caption_endpoints(cfg, console))
            if {"caption", "verify"} & set(stages)
            else cfg.caption
        )
        if "caption" in stages:
            with timed("caption"):
                summary["caption"] = _caption(cfg, pool, client, console, max_cost)
        if "verify" in stages:
            with timed("verify"):
                summary["verify"] = _verify(cfg, pool, client, console, max_cost)
        if "export" in stages:
            from cenlib.export import ExportError, run_export

            with timed("export"), console.status("export: the dataset in every format, its card"):
                try:
                    summary["export"] = run_export(cfg, client)
                except ExportError as e:
                    raise JobError(str(e)) from e
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_summary(out, summary, earlier)
    if "report" in stages:  # after summary.json: the report shows this run's stage times
        from cenlib.report import run_report

        with _timed(wall, "report"), console.status("report: the dataset's figures"):
            summary["report"] = run_report(out)
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        write_summary(out, summary, earlier)
    print_summary(out, summary, console)
    return summary


@contextlib.contextmanager
def _profiled(
    wall: dict[str, float],
    profiles: dict[str, dict[str, Any]],
    client: Client,
    out: Path,
    stage: str,
) -> Iterator[None]:
    """Run the body as ``stage``: timed, in its Dask span, with its performance report."""
    with _timed(wall, stage), stage_profile(client, stage, out) as prof:
        yield
    profiles[stage] = prof.figures


@contextlib.contextmanager
def _timed(wall: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of ``stage`` in ``wall`` (also when it fails)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        wall[stage] = round(time.perf_counter() - t0, 2)


def _keys(stage: str) -> tuple[str, ...]:
    """A stage's records in the run summary (ingest's includes its search)."""
    return ("search", "ingest") if stage == "ingest" else (stage,)


def earlier_records(out: Path, stages: tuple[str, ...]) -> dict[str, Any]:
    """What the run's summary.json says of the stages before this command's first: their
    outputs are still the run's, so their records stay (a stage run again, or one after it,
    has its record replaced or dropped). Empty when there is no readable summary.json."""
    try:
        old = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict):
        return {}
    first = min((STAGES.index(s) for s in stages if s in STAGES), default=0)
    before = [s for s in STAGES[:first] if any(k in old for k in _keys(s))]
    keep: dict[str, Any] = {k: old[k] for s in before for k in _keys(s) if k in old}
    for part in ("wall", "profile"):
        given = old.get(part)
        keep[part] = {s: given[s] for s in before if s in given} if isinstance(given, dict) else {}
    keep["earlier"] = before
    return keep


def write_summary(out: Path, summary: dict[str, Any], earlier: dict[str, Any]) -> None:
    """``summary.json``: this command's summary, with the records of ``earlier`` stages (see
    :func:`earlier_records`) before it; ``stages`` names this command's, ``earlier`` the
    others'."""
    now = as_json(summary)
    data = {**{k: v for k, v in earlier.items() if k not in ("wall", "profile")}, **now}
    for part in ("wall", "profile"):
        data[part] = {**earlier.get(part, {}), **now.get(part, {})}
    data["earlier"] = earlier.get("earlier", [])
    write_text_atomic(out / "summary.json", json.dumps(data, indent=1) + "\n")


def as_json(summary: dict[str, Any]) -> dict[str, Any]:
    """The run summary with each stage's record as its JSON mapping."""
    return {k: v.as_dict() if isinstance(v, Summary) else v for k, v in summary.items()}


def incomplete(summary: dict[str, Any]) -> str:
    """Why a run did not finish its work (failed searches, caption dead letters, prompts the
    budget left), or "" when it did; ``cen`` and ``jobs/`` exit 1 when this is not empty."""
    why = []
    plan, search, cap = summary.get("plan"), summary.get("search"), summary.get("caption")
    failed = (search.failed if search else 0) + (plan.search.failed if plan and plan.search else 0)
    if failed:
        why.append(f"{failed} searches failed (see failures.jsonl)")
    if cap is not None and cap["dead_letters"]:
        why.append(f"{cap['dead_letters']} caption dead letters (see dead_letters.jsonl)")
    if cap is not None and cap["skipped"]:
        why.append(f"{cap['skipped']} prompts left by the budget (raise caption.max_cost)")
    return "; ".join(why)


INTERRUPTED = (
    "finished work is saved (store shards, prompt parts, answers); run the same command again "
    "to resume"
)


def exit_code(run: Callable[[], dict[str, Any]], say: Callable[[str, str], None]) -> int:
    """Call ``run`` (a job) and turn how it ended into the exit code ``cen`` and ``jobs/``
    share: 0 done, 1 incomplete, 2 not found, a CenError's own code, 130 interrupted; ``say``
    gets (``error``/``incomplete``/``interrupted``, message) for the user."""
    try:
        summary = run()
    except CenError as e:
        say("error", str(e))
        return e.exit_code
    except FileNotFoundError as e:
        say("error", str(e))
        return 2
    except KeyboardInterrupt:
        say("interrupted", INTERRUPTED)
        return 130
    why = incomplete(summary)
    if why:
        say("incomplete", why)
    return 1 if why else 0


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
    for name in ("plan", "search", *STAGES[1:]):
        if isinstance(summary.get(name), Summary):
            console.print(summary[name].line(), highlight=False)
    ingest = summary.get("ingest")
    if ingest is not None and ingest.preview:
        console.print(f"preview of ingested patches: [bold]{ingest.preview}[/]")
    if "caption" in summary:
        first = _first_caption(out / CAPTIONS)
        if first:
            console.print(f"  e.g. {first[0]}: [italic]{first[1][:300]}[/]")
    table = Table(title=f"run directory {out}")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for p in sorted(out.rglob("*")):
        rel = str(p.relative_to(out))
        skip = ("prompts/", "responses/", "export/", "verify/", "profile/")
        if p.is_file() and ".zarr" not in rel and not rel.startswith(skip):
            table.add_row(str(p.relative_to(out)), f"{p.stat().st_size:,}")
    console.print(table)
    if summary.get("profile"):
        console.print(profile_table(summary["profile"], out))
    export, report = summary.get("export"), summary.get("report")
    if isinstance(export, Summary):
        console.print(f"dataset: [bold]{export['directory']}[/] (its card: README.md)")
    if isinstance(report, Summary):
        console.print(f"report: [bold]{report['path']}[/]")
