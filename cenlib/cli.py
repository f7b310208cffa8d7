"""The ``cen`` command line: thin wrappers over cenlib, one subcommand per job or tool."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cenlib.config import ConfigError, RunConfig, load_config, with_cluster
from cenlib.errors import CenError

app = typer.Typer(
    no_args_is_help=True,
    help="Build ChatEarthNet-style image-text datasets of Sentinel-2 imagery on Dask.",
)
config_app = typer.Typer(no_args_is_help=True, help="Inspect run configurations.")
world_app = typer.Typer(
    no_args_is_help=True, help="The built-in synthetic world (offline sources)."
)
stac_app = typer.Typer(no_args_is_help=True, help="Serve and search STAC APIs.")
app.add_typer(config_app, name="config")
app.add_typer(world_app, name="world")
app.add_typer(stac_app, name="stac")
cluster_app = typer.Typer(no_args_is_help=True, help="Cluster specs (cluster/*.yaml).")
app.add_typer(cluster_app, name="cluster")
err = Console(stderr=True)

# Every job command takes the cluster from the config, or from one of these (they win).
ClusterOpt = Annotated[
    Path | None,
    typer.Option(
        "--cluster",
        help="a cluster spec: cluster/local.yaml | scheduler.yaml | slurm.yaml | kubernetes.yaml",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option("--scheduler", help="a running scheduler's address, e.g. tcp://host:8786"),
]


def _load(path: Path, cluster: Path | None = None, scheduler: str | None = None) -> RunConfig:
    try:
        return with_cluster(load_config(path), cluster, scheduler)
    except ConfigError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from e


@config_app.command("show")
def config_show(path: Annotated[Path, typer.Argument(help="YAML run configuration")]) -> None:
    """Validate a configuration and print it with every default filled in."""
    typer.echo(_load(path).to_yaml(), nl=False)


@world_app.command("build")
def world_build(
    out: Annotated[Path, typer.Option(help="directory to write the world into (replaced)")],
    seed: Annotated[int, typer.Option(help="random seed; same seed, same bytes")] = 0,
    preset: Annotated[str, typer.Option(help="tiny | demo | large")] = "demo",
) -> None:
    """Generate WorldCover tiles, Sentinel-2 scenes (COGs) and their STAC items."""
    from cenlib.progress import progress_bar
    from cenlib.world.build import build_world, count_steps
    from cenlib.world.presets import PRESETS

    if preset not in PRESETS:
        err.print(f"[red]error:[/] --preset {preset!r} unknown; choose one of {', '.join(PRESETS)}")
        raise typer.Exit(2)
    with progress_bar(Console()) as bar:
        task = bar.add_task(f"world {preset}", total=count_steps(preset))
        try:
            m = build_world(out, preset, seed, lambda _m, n: bar.advance(task, n))
        except FileExistsError as e:
            err.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from e
    typer.echo(json.dumps(m["counts"]))


@stac_app.command("serve")
def stac_serve(
    paths: Annotated[
        list[Path], typer.Argument(help="a world directory, or folders/files of STAC JSON")
    ],
    port: Annotated[int, typer.Option(help="port (0 = pick a free one)")] = 0,
) -> None:
    """Serve STAC JSON (or each catalogue of a world) as a STAC API on loopback until Ctrl-C."""
    import contextlib

    from cenlib.stac.server import StacServerError, serve, world_catalogs
    from cenlib.world.build import read_manifest

    try:
        with contextlib.ExitStack() as stack:
            if len(paths) == 1 and read_manifest(paths[0]) is not None:
                for name, folder in world_catalogs(paths[0]).items():
                    url = stack.enter_context(serve([folder], port=port or None))
                    typer.echo(f"{name}: {url}")
                    port = port + 1 if port else 0
            else:
                typer.echo(stack.enter_context(serve(paths, port=port or None)))
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    except StacServerError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e


@stac_app.command("search")
def stac_search(
    url: Annotated[str, typer.Argument(help="STAC API root URL")],
    collection: Annotated[str, typer.Option(help="collection id")],
    bbox: Annotated[str, typer.Option(help="min_lon,min_lat,max_lon,max_lat")],
    datetime: Annotated[str | None, typer.Option(help="instant or start/end interval")] = None,
    max_cloud: Annotated[float | None, typer.Option(help="maximum eo:cloud_cover, percent")] = None,
) -> None:
    """Search one collection and print matching item ids (cloud-filtered client-side if needed)."""
    from cenlib.stac.search import SearchRequest, StacSearchError, search

    try:
        parts = tuple(float(v) for v in bbox.split(","))
        if len(parts) != 4:
            raise ValueError
    except ValueError as e:
        err.print(
            f"[red]error:[/] --bbox {bbox!r} must be four numbers: min_lon,min_lat,max_lon,max_lat"
        )
        raise typer.Exit(2) from e
    try:
        box4 = (parts[0], parts[1], parts[2], parts[3])
        res = search(SearchRequest(url, collection, box4, datetime, max_cloud))
    except StacSearchError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    for it in res.items:
        typer.echo(f"{it.id}\t{it.properties.get('eo:cloud_cover', '')}")
    err.print(
        f"{len(res.items)} items (cloud filter: {res.cloud_filter}, "
        f"dropped {len(res.dropped_cloudy)})"
    )


def _run(
    config: Path,
    stages: tuple[str, ...] | str,
    max_cost: float | None = None,
    prompts_from: Path | None = None,
    cluster: Path | None = None,
    scheduler: str | None = None,
) -> None:
    """Run ``stages`` (or every stage up to the one named) and turn errors into exit codes."""
    from cenlib.job import exit_code, run_job, stages_until

    def job() -> dict[str, Any]:
        todo = stages_until(stages) if isinstance(stages, str) else stages
        cfg = _load(config, cluster, scheduler)
        return run_job(cfg, stages=todo, max_cost=max_cost, prompts_from=prompts_from)

    code = exit_code(job, _say)
    if code:
        raise typer.Exit(code)


def _say(kind: str, message: str) -> None:
    colour = "red" if kind == "error" else "yellow"
    err.print(f"[{colour}]{kind}:[/] {message}", highlight=False)


@app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    until: Annotated[
        str,
        typer.Option(
            help="stop after this stage: plan|ingest|analyze|prompt|caption|verify|export|report"
        ),
    ] = "report",
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Run the dataset job: every stage in order (up to --until), on a Dask cluster."""
    _run(config, until, cluster=cluster, scheduler=scheduler)


@app.command("plan")
def plan(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Plan the patches (writes <output>/plan.parquet)."""
    _run(config, ("plan",), cluster=cluster, scheduler=scheduler)


@app.command("ingest")
def ingest(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Search and ingest the planned patches into the Zarr store (resumes where it stopped)."""
    _run(config, ("ingest",), cluster=cluster, scheduler=scheduler)


@app.command("analyze")
def analyze(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Land-cover counts per region and layout descriptors -> <output>/analysis.parquet."""
    _run(config, ("analyze",), cluster=cluster, scheduler=scheduler)


@app.command("caption")
def caption(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    estimate: Annotated[
        bool, typer.Option("--estimate", help="count tokens; print cost and time; send nothing")
    ] = False,
    max_cost: Annotated[
        float | None,
        typer.Option(help="USD budget for the run directory (overrides caption.max_cost)"),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            help="caption another run's prompts: its directory or prompts.jsonl, copied into "
            "this run's output first"
        ),
    ] = None,
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Caption every prompt through the endpoint pool (resumes; never pays twice for a key).

    With --prompts, a new run directory (its own `output:`) captions the prompts of an existing
    run with this config's endpoints, e.g. to compare models on the same prompts.
    """
    if estimate:
        from cenlib.captions import print_estimate

        try:
            print_estimate(_load(config))
        except FileNotFoundError as e:
            err.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from e
        return
    _run(config, ("caption",), max_cost, prompts, cluster, scheduler)


@app.command("prompt")
def prompt(
    target: Annotated[
        str, typer.Argument(help="a YAML run configuration, or 'preview' (see --labels)")
    ],
    labels: Annotated[
        Path | None,
        typer.Option(help="preview: an .npy array (n, 256, 256) uint8 of class indices 0..11"),
    ] = None,
    style: Annotated[str, typer.Option(help="preview: prompt style")] = "chatearthnet-3.5",
    seed: Annotated[int, typer.Option(help="preview: seed of the wording choices")] = 0,
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Build the prompts of a run, or preview what a model would be asked for class maps.

    `cen prompt CONFIG` writes <output>/prompts.jsonl from the analysis. `cen prompt preview
    --labels maps.npy --style chatearthnet-3.5 --seed 0` prints one JSON object per map: the
    statistics the prompt states and the chat messages, before anything is sent or paid for.
    """
    if target != "preview":
        _run(Path(target), ("prompt",), cluster=cluster, scheduler=scheduler)
        return
    from cenlib.prompts import PreviewError, preview_labels

    if labels is None:
        err.print("[red]error:[/] preview needs --labels FILE.npy")
        raise typer.Exit(2)
    try:
        for obj in preview_labels(labels, style, seed):
            print(json.dumps(obj))
    except PreviewError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e


@app.command("verify")
def verify(
    target: Annotated[
        str, typer.Argument(help="a YAML run configuration, or 'preview' (see --labels)")
    ],
    labels: Annotated[
        Path | None,
        typer.Option(help="preview: an .npy array (n, 256, 256) uint8 of class indices 0..11"),
    ] = None,
    captions: Annotated[
        Path | None,
        typer.Option(help='preview: a JSONL file of {"index": i, "caption": "..."} lines'),
    ] = None,
    style: Annotated[
        str, typer.Option(help="preview: the prompt style the captions answer")
    ] = "chatearthnet-3.5",
    max_cost: Annotated[
        float | None,
        typer.Option(help="USD budget for the run directory, repairs included"),
    ] = None,
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Check every caption against its patch's land cover; repair through the pool.

    `cen verify CONFIG` writes <output>/verify.parquet. `cen verify preview --labels maps.npy
    --captions captions.jsonl` prints, per caption line and in order, one JSON object: index,
    pass, score and the violations (type, class, words, span, reason).
    """
    if target != "preview":
        _run(Path(target), ("verify",), max_cost, cluster=cluster, scheduler=scheduler)
        return
    from cenlib.prompts import PreviewError
    from cenlib.verify import preview_verdicts

    if labels is None or captions is None:
        err.print("[red]error:[/] preview needs --labels FILE.npy and --captions FILE.jsonl")
        raise typer.Exit(2)
    try:
        for obj in preview_verdicts(labels, captions, style):
            print(json.dumps(obj))
    except PreviewError as e:
        err.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e


@app.command("export")
def export(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    cluster: ClusterOpt = None,
    scheduler: SchedulerOpt = None,
) -> None:
    """Export the verified (and reviewed) captions in ChatEarthNet's layout, split by place.

    Writes <output>/export/chatearthnet/: PNGs per patch (RGB, false colour, land-cover map)
    and caption files per model and split (train / validation / test, spatially disjoint).
    """
    _run(config, ("export",), cluster=cluster, scheduler=scheduler)


@app.command("review")
def review(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (its output: of the config)")],
    host: Annotated[str, typer.Option(help="address to bind; keep 127.0.0.1 unless tunnelled")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="port to listen on; 0 takes any free one")] = 0,
    reviewer: Annotated[
        str | None, typer.Option(help="name recorded with each decision (default: login name)")
    ] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="open the page in a browser")] = (
        False
    ),
) -> None:
    """Review a run's captions in the browser: accept, reject or edit each (keys a, r, e).

    Prints a URL with a random access token; decisions go to <run>/review.sqlite (the export
    uses the latest one per patch). Stop with Ctrl-C.
    """
    from cenlib.review import ReviewServerError, serve_review

    try:
        serve_review(
            run_dir,
            host=host,
            port=port,
            reviewer=reviewer,
            open_browser=open_browser,
            # plain print: a URL wrapped by rich cannot be copied whole
            on_ready=lambda url: print(f"review: open {url} (Ctrl-C stops)", flush=True),
        )
    except (ReviewServerError, CenError) as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from e


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (its output: of the config)")],
    output: Annotated[
        Path | None, typer.Option(help="where to write the page (default: <run>/report.html)")
    ] = None,
    screenshot: Annotated[
        Path | None,
        typer.Option(help="also render the page in headless Chromium and save a full-page PNG"),
    ] = None,
) -> None:
    """Write the dataset's report: one self-contained HTML page with its statistics.

    A map of the samples, land cover per split, caption lengths and vocabulary, class mentions
    against presence, verification pass rates, review outcomes, time and cost per stage; made
    from the export, the verdicts, review.sqlite and summary.json of RUN_DIR.
    """
    from cenlib.report import ReportError, ScreenshotError, run_report
    from cenlib.report import screenshot as render

    try:
        summary = run_report(run_dir, output)
    except ReportError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from e
    typer.echo(summary.line())
    if screenshot is not None:
        try:
            check = render(Path(summary.path), screenshot)
        except ScreenshotError as e:
            err.print(f"[red]error:[/] {e}", highlight=False)
            raise typer.Exit(2) from e
        broken = sum(1 for w in check.images if w == 0)
        typer.echo(f"screenshot: {screenshot} ({check.width} x {check.height} px)")
        if broken or check.blocked:
            err.print(f"[red]error:[/] {broken} images did not load; requests {check.blocked}")
            raise typer.Exit(1)


@cluster_app.command("spec")
def cluster_spec(
    spec: Annotated[Path, typer.Argument(help="a cluster spec, e.g. cluster/kubernetes.yaml")],
) -> None:
    """Print what a spec starts, without starting it: the Kubernetes DaskCluster resource (apply
    it with `kubectl apply -f`), or the SLURM job script of one worker job."""
    import yaml

    from cenlib.cluster import kubernetes_spec, slurm_job_script
    from cenlib.config import load_cluster_spec

    try:
        cc = load_cluster_spec(spec)
    except ConfigError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise typer.Exit(2) from e
    if cc.kind == "kubernetes":
        typer.echo(yaml.safe_dump(kubernetes_spec(cc.kubernetes), sort_keys=False), nl=False)
    elif cc.kind == "slurm":
        typer.echo(slurm_job_script(cc))
    else:
        err.print(f"[red]error:[/] {spec}: kind {cc.kind!r}: only slurm and kubernetes print")
        raise typer.Exit(2)
