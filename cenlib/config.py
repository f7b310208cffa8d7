"""The run configuration: one YAML file, validated once, frozen afterwards.

Every stage receives a :class:`RunConfig` (or one of its parts) and never reads YAML itself.
Errors name the file, the dotted key and the offending value, and say how to fix them.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cenlib.errors import CenError

# An area of interest: lon/lat bounding box in EPSG:4326.
BBox = tuple[float, float, float, float]
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(CenError, ValueError):
    """A run configuration that cannot be used; the message says where and how to fix it."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class WorldConfig(_Record):
    """The built-in synthetic world, served on loopback when a source's ``api`` is ``world``."""

    preset: Literal["demo", "large", "tiny"] = "demo"
    seed: int = Field(0, ge=0)
    cache_dir: Path = Path(".cache/worlds")


class SourceConfig(_Record):
    """One STAC collection: where to search and which catalogue dialect it speaks."""

    api: str = Field(description="STAC API root URL, or 'world' for the synthetic world")
    collection: str
    dialect: Literal["earth-search", "planetary-computer"] = "earth-search"
    sign: bool = Field(
        False, description="sign asset hrefs with the planetary-computer package before reading"
    )

    @field_validator("api")
    @classmethod
    def _api_is_url(cls, v: str) -> str:
        if v != "world" and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(
                "must be an http(s) URL of a STAC API root, or 'world' for the synthetic world"
            )
        return v


class SourcesConfig(_Record):
    sentinel2: SourceConfig = SourceConfig(
        api="world", collection="sentinel-2-l2a", dialect="earth-search"
    )
    worldcover: SourceConfig = SourceConfig(
        api="world", collection="esa-worldcover", dialect="planetary-computer"
    )


class GridConfig(_Record):
    """Patch grid: ChatEarthNet's Web-Mercator zoom-13 tiling, or native UTM patches."""

    kind: Literal["chatearthnet", "utm"] = "chatearthnet"
    zoom: int = Field(13, ge=1, le=20)
    patch_size: int = Field(256, ge=16, le=4096)
    utm_epsg: int | None = Field(None, description="EPSG code of the UTM zone for kind=utm")

    @model_validator(mode="after")
    def _utm_needs_zone(self) -> GridConfig:
        if self.utm_epsg is not None and not (
            32601 <= self.utm_epsg <= 32660 or 32701 <= self.utm_epsg <= 32760
        ):
            raise ValueError(f"utm_epsg {self.utm_epsg} is not a WGS 84 / UTM zone (326xx, 327xx)")
        return self


_MONTH_DAY = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")


class TimeConfig(_Record):
    """The Sentinel-2 window; optionally only named seasons within it (``MM-DD`` ranges)."""

    start: dt.date = dt.date(2021, 6, 1)
    end: dt.date = dt.date(2021, 9, 30)
    seasons: dict[str, tuple[str, str]] = Field(
        default_factory=dict,
        description="name -> [first MM-DD, last MM-DD]; a range may wrap the new year",
    )

    @field_validator("seasons")
    @classmethod
    def _month_days(cls, v: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
        for name, (a, b) in v.items():
            for md in (a, b):
                if not _MONTH_DAY.match(md):
                    raise ValueError(f"season {name!r}: {md!r} is not a month-day like 06-21")
        return v

    def season_of(self, day: dt.date) -> str | None:
        """The season a day falls in ('' when no seasons are configured), or None if none."""
        if not self.seasons:
            return ""
        md = f"{day.month:02d}-{day.day:02d}"
        for name, (a, b) in self.seasons.items():
            if (a <= md <= b) if a <= b else (md >= a or md <= b):
                return name
        return None

    @model_validator(mode="after")
    def _ordered(self) -> TimeConfig:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    @property
    def interval(self) -> str:
        """The window as a STAC datetime interval (inclusive whole days, UTC)."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"


class ThresholdsConfig(_Record):
    max_cloud_cover: float = Field(30.0, ge=0, le=100, description="scene eo:cloud_cover, %")
    min_valid_fraction: float = Field(0.9, ge=0, le=1, description="valid pixels in a patch")
    max_patch_cloud: float = Field(
        5.0, ge=0, le=100, description="cloud, shadow and cirrus over the patch by SCL, %"
    )
    max_patch_nodata: float = Field(1.0, ge=0, le=100, description="nodata over the patch, %")


class PlanConfig(_Record):
    """Which patches: every patch of the areas, a seeded draw from them, or an explicit list."""

    source: Literal["area", "list"] = "area"
    list_file: Path | None = Field(
        None, description="CSV (column id, or lon and lat), GeoJSON points, or text of ids"
    )
    count: int | None = Field(None, ge=1, description="patches to draw; None = all of the area")
    seed: int = Field(0, ge=0)
    stratify: bool = Field(False, description="balance the dominant WorldCover class")
    min_worldcover_fraction: float = Field(
        0.95, ge=0, le=1, description="draw only where WorldCover has at least this much data"
    )

    @model_validator(mode="after")
    def _list_needs_file(self) -> PlanConfig:
        if self.source == "list" and self.list_file is None:
            raise ValueError("source 'list' needs 'list_file: patches.csv'")
        return self


S2_BANDS = (
    "blue",
    "green",
    "red",
    "nir",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir08",
    "swir16",
    "swir22",
)


class IngestConfig(_Record):
    """Reading Sentinel-2 and WorldCover onto each patch and writing the Zarr store."""

    bands: tuple[str, ...] = ("blue", "green", "red", "nir")
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"
    shard_patches: int = Field(16, ge=1, le=4096, description="patches per Zarr shard (one task)")
    io_concurrency: int = Field(
        4,
        ge=1,
        le=256,
        description="patches of a shard read at once in threads when its COGs are on HTTP(S)",
    )
    store: str | None = Field(
        None, description="Zarr store path or fsspec URL; default <output>/dataset.zarr"
    )
    replace_foreign: bool = Field(
        False,
        description="replace a cen store written by another plan or config instead of stopping",
    )

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [b for b in v if b not in S2_BANDS]
        if bad or not v or len(set(v)) != len(v):
            raise ValueError(
                f"bands must be distinct names from {', '.join(S2_BANDS)} (Earth Search keys; "
                f"the Planetary Computer's B02.. keys are mapped automatically); got {list(v)}"
            )
        return v


class AnalysisConfig(_Record):
    """Per-patch land-cover statistics and layout descriptors."""

    batch: int = Field(256, ge=1, description="patches per task (rounded up to whole shards)")
    layout: bool = Field(True, description="compute shape and position descriptors")
    layout_block: int = Field(
        4, ge=1, le=64, description="pixels per side of the blocks the layout is measured on"
    )


PROMPT_STYLES = ("chatearthnet-3.5", "chatearthnet-4v", "cen-layout")


class PromptConfig(_Record):
    """How patches become chat messages: a named style (optionally pinned: ``name@1``)."""

    style: str = "chatearthnet-3.5"
    seed: int = Field(0, ge=0, description="seeds the wording choices (nouns for amounts)")
    include_rgb: bool = Field(False, description="chatearthnet-4v: send the RGB image too")
    per_request: int = Field(
        1, ge=1, le=4, description="chatearthnet-4v: patches per request (their answer is split)"
    )

    @model_validator(mode="after")
    def _batchable(self) -> PromptConfig:
        if self.per_request > 1 and not self.style.startswith("chatearthnet-4v"):
            raise ValueError(
                f"per_request {self.per_request}: only chatearthnet-4v puts several patches in "
                "one request; set per_request: 1 for this style"
            )
        return self

    @field_validator("style")
    @classmethod
    def _known_style(cls, v: str) -> str:
        name, _, version = v.partition("@")
        if name not in PROMPT_STYLES or (version and not version.isdigit()):
            raise ValueError(
                f"unknown prompt style {v!r}; choose one of {', '.join(PROMPT_STYLES)} "
                "(optionally pinned to a version, e.g. chatearthnet-3.5@1)"
            )
        return v


class EndpointConfig(_Record):
    """One endpoint of the caption pool.

    ``kind`` says what answers: ``openai`` (any OpenAI-compatible Chat Completions server at
    ``base_url``: OpenAI, vLLM, Ollama, llama.cpp, LiteLLM), ``rules`` (the built-in seeded
    captioner, no network) or ``smollm2`` (a real local LLM the job starts on loopback; needs
    ``make smollm2``). The key is read on the worker from the environment variable named in
    ``api_key_env``, never from this file. Limits hold for the whole cluster; concurrency is per
    worker process. Prices are per million tokens, in USD.
    """

    name: str | None = None  # how reports and dead letters name it; default: kind/model@host
    kind: Literal["openai", "rules", "smollm2"] = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    weight: float = Field(1.0, gt=0)
    max_concurrency: int = Field(4, ge=1, le=512)
    requests_per_minute: int | None = Field(60, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    price_in: float = Field(0.0, ge=0)  # USD per 1M prompt tokens
    price_out: float = Field(0.0, ge=0)  # USD per 1M completion tokens
    timeout_s: float = Field(60.0, gt=0)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            raise ValueError(
                "must be the NAME of an environment variable holding the key "
                "(e.g. OPENAI_API_KEY), never the key itself"
            )
        return v

    @model_validator(mode="after")
    def _complete(self) -> EndpointConfig:
        if self.kind == "openai" and (not self.base_url or not self.model):
            raise ValueError(
                "an endpoint of kind 'openai' needs base_url (e.g. https://api.openai.com/v1) "
                "and model (e.g. gpt-3.5-turbo)"
            )
        return self

    @property
    def model_name(self) -> str:
        """The model asked for (the request key depends on it)."""
        return self.model or {"rules": "cen-rules@2", "smollm2": "smollm2"}.get(self.kind, "")

    @property
    def label(self) -> str:
        """The endpoint's name in reports, dead letters and the rate limiter."""
        if self.name:
            return self.name
        if self.kind != "openai" or not self.base_url:
            return f"{self.kind}/{self.model_name}"
        host = re.sub(r"^[a-z]+://", "", self.base_url).split("/")[0]
        return f"{self.model_name}@{host}"


class CaptionConfig(_Record):
    """The caption stage: a pool of endpoints and how requests are sent to it."""

    endpoints: tuple[EndpointConfig, ...] = (EndpointConfig(kind="rules"),)
    mode: Literal["online", "batch-api"] = "online"
    batch_size: int = Field(64, ge=1, le=100_000)  # requests per Dask task
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_s: float = Field(0.5, gt=0)  # first backoff; doubles per attempt, with full jitter
    backoff_max_s: float = Field(30.0, gt=0)
    breaker_failures: int = Field(5, ge=1)  # consecutive failures that open an endpoint's circuit
    breaker_cooldown_s: float = Field(10.0, gt=0)  # before a half-open probe
    max_cost: float | None = Field(None, ge=0)  # USD for the whole run directory; None: no budget
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(400, ge=1)
    expected_tokens_out: int | None = Field(None, ge=1)  # for --estimate; default max_tokens / 2
    poll_s: float = Field(30.0, gt=0)  # batch-api mode: seconds between status polls
    rate_window_s: float = Field(60.0, gt=0)  # the sliding window the per-minute limits hold in

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, v: tuple[EndpointConfig, ...]) -> tuple[EndpointConfig, ...]:
        if not v:
            raise ValueError("give at least one endpoint (kind: rules needs nothing else)")
        labels = [e.label for e in v]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"endpoint names must be unique; give `name:` to tell {dup} apart")
        return v

    @property
    def params(self) -> dict[str, Any]:
        """What changes an answer, so it is part of every request key."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}


class VerifyConfig(_Record):
    """The verify stage: how captions are checked against the land cover, and repaired."""

    min_pixels: int = Field(
        20, ge=1, description="pixels a class needs in the patch (or a place) to be named there"
    )
    dominant_share: float = Field(
        0.3, gt=0, le=1, description="a class over this share of the land cover must be named"
    )
    dominance_share: float = Field(
        0.3, gt=0, le=1, description="'dominated by', 'mostly' need at least this share"
    )
    small_share: float = Field(
        0.6, gt=0, le=1, description="'a small patch of', 'a little' allow at most this share"
    )
    repair_rounds: int = Field(
        2, ge=0, le=10, description="follow-ups sent to the pool for a caption that fails"
    )
    batch_size: int = Field(2000, ge=1, le=1_000_000, description="captions per Dask task")
    min_words: int | None = Field(None, ge=1, description="override the style's lower bound")
    max_words: int | None = Field(None, ge=1, description="override the style's upper bound")


class ExportConfig(_Record):
    """The export stage: which captions go in, the splits, and how images become 8 bits."""

    include: tuple[Literal["pass", "repaired", "failed", "rejected"], ...] = Field(
        ("pass", "repaired"),
        description="verification statuses that go in without a review decision (accepted and "
        "edited ones always do; add 'failed' or 'rejected' to keep those too)",
    )
    ratios: tuple[float, float, float] = Field(
        (0.6, 0.1, 0.3), description="train, validation, test shares (sum 1)"
    )
    seed: int = Field(0, ge=0, description="seeds the order blocks are dealt to the splits")
    block_zoom: int = Field(
        13,
        ge=0,
        le=13,
        description="ChatEarthNet grid: patches of one tile at this zoom share a split",
    )
    utm_block: int = Field(1, ge=1, description="UTM grid: blocks of this many patches a side")
    stratify: bool = Field(False, description="deal blocks per dominant class")
    percentiles: tuple[float, float] = Field(
        (2.0, 98.0), description="reflectance percentiles mapped to 0 and 255, per band"
    )
    stretch_sample: int = Field(
        64, ge=1, description="patches the percentiles are measured on (spread over the store)"
    )
    batch: int = Field(
        64, ge=1, description="patches per Dask task, so per WebDataset shard and Parquet part"
    )
    formats: tuple[
        Literal["chatearthnet", "llava", "parquet", "webdataset", "stac", "geotiff", "croissant"],
        ...,
    ] = Field(
        ("chatearthnet", "llava", "parquet", "webdataset", "stac", "geotiff", "croissant"),
        description="what to write besides the PNGs and the card (croissant describes the "
        "Parquet parts, so it needs parquet)",
    )
    parquet_images: bool = Field(
        False, description="put the RGB and land-cover PNGs in the Parquet rows as bytes"
    )
    png_compression: int = Field(
        6,
        ge=0,
        le=9,
        description="zlib level of the PNGs (0-9; pixels are the same at every level): at 1 "
        "the export ran 2.8 times as fast as at 6 and wrote 18 % more bytes (benchmarks/README.md)",
    )
    output: str | None = Field(
        None,
        description="where the export goes: a directory or an fsspec URL (s3://..., gs://...); "
        "default <output>/export/chatearthnet",
    )

    @model_validator(mode="after")
    def _valid(self) -> ExportConfig:
        if abs(sum(self.ratios) - 1) > 1e-6 or min(self.ratios) < 0:
            raise ValueError(f"ratios {list(self.ratios)} must be >= 0 and sum to 1")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles {[lo, hi]} must satisfy 0 <= low < high <= 100")
        if "croissant" in self.formats and "parquet" not in self.formats:
            raise ValueError("formats: croissant describes the Parquet parts; add parquet")
        return self


class TLSConfig(_Record):
    """Certificates for a TLS scheduler (``tls://``): the CA that signed the scheduler's and
    workers' certificates, and this client's own certificate and key (PEM files)."""

    ca_file: Path
    cert: Path
    key: Path

    @model_validator(mode="after")
    def _files_exist(self) -> TLSConfig:
        for name in ("ca_file", "cert", "key"):
            path = getattr(self, name)
            if not Path(path).is_file():
                raise ValueError(
                    f"tls.{name}: {path} is not a file; give the PEM file's path "
                    "(cluster/tls.sh makes a self-signed CA and certificates)"
                )
        return self


class SlurmConfig(_Record):
    """Workers as SLURM jobs through dask-jobqueue's ``SLURMCluster``: one job per ``processes``
    workers, scaled between ``minimum`` and ``maximum`` jobs by Dask's adaptive scaling."""

    queue: str | None = None
    account: str | None = None
    cores: int = Field(1, ge=1)
    processes: int = Field(1, ge=1)
    memory: str = "4GiB"
    walltime: str = "01:00:00"
    minimum: int = Field(1, ge=0)
    maximum: int = Field(2, ge=1)
    # Lines run in the job script before the worker starts (module load, activate the venv).
    job_script_prologue: tuple[str, ...] = ()
    # Extra `#SBATCH` directives, e.g. "--exclusive" or "--gres=gpu:1".
    job_extra_directives: tuple[str, ...] = ()
    # The python that starts the workers (default: the one running the job).
    python: str | None = None
    # Where SLURM writes the workers' logs; local scratch for worker spill.
    log_directory: str | None = None
    local_directory: str | None = None
    # The network interface the scheduler listens on (the one the compute nodes reach).
    interface: str | None = None
    scheduler_host: str | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SlurmConfig:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) > maximum ({self.maximum}) jobs")
        return self


class KubernetesConfig(_Record):
    """A ``DaskCluster`` resource of the Dask Kubernetes operator (its CRD), made with the
    operator's ``make_cluster_spec``; ``cen cluster spec`` prints it offline."""

    name: str = Field("cen", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str | None = None
    image: str = "cenlib:latest"
    n_workers: int = Field(2, ge=0)
    minimum: int = Field(1, ge=0)
    maximum: int = Field(4, ge=1)
    # Per worker container, as Kubernetes writes them: {"limits": {"cpu": "2", "memory": "8Gi"}}.
    resources: dict[str, dict[str, str]] = {}
    # Plain environment for the pods; secrets belong in Kubernetes Secrets, never here.
    env: dict[str, str] = {}
    worker_command: str = "dask worker"


class ClusterConfig(_Record):
    """Where the job runs: a LocalCluster of worker processes, an existing scheduler (optionally
    TLS), SLURM jobs (dask-jobqueue) or a Kubernetes DaskCluster (the Dask operator)."""

    kind: Literal["local", "address", "slurm", "kubernetes"] = "local"
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str = "4GiB"
    address: str | None = None
    dashboard_address: str = ":0"
    tls: TLSConfig | None = None
    slurm: SlurmConfig = SlurmConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    # Seconds to wait for the first worker of an external, SLURM or Kubernetes cluster.
    worker_timeout: float = Field(300, gt=0)

    @model_validator(mode="after")
    def _address_given(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs 'address: tcp://host:8786'")
        if self.address and self.address.startswith("tls://") and self.tls is None:
            raise ValueError(
                f"address {self.address} is TLS: add tls: {{ca_file, cert, key}} "
                "(the CA and this client's certificate)"
            )
        return self


class RunConfig(_Record):
    """Everything one run needs. Load it with :func:`load_config`."""

    name: str = "run"
    output: Path = Path("runs/run")
    aoi: Annotated[tuple[BBox, ...], Field(min_length=1)] | Literal["world"] = "world"
    world: WorldConfig = WorldConfig()
    sources: SourcesConfig = SourcesConfig()
    grid: GridConfig = GridConfig()
    time: TimeConfig = TimeConfig()
    thresholds: ThresholdsConfig = ThresholdsConfig()
    plan: PlanConfig = PlanConfig()
    ingest: IngestConfig = IngestConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    prompt: PromptConfig = PromptConfig()
    caption: CaptionConfig = CaptionConfig()
    verify: VerifyConfig = VerifyConfig()
    export: ExportConfig = ExportConfig()
    cluster: ClusterConfig = ClusterConfig()

    @field_validator("aoi")
    @classmethod
    def _bboxes(cls, v: tuple[BBox, ...] | str) -> tuple[BBox, ...] | str:
        if isinstance(v, str):
            return v
        for i, (w, s, e, n) in enumerate(v):
            if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
                raise ValueError(
                    f"aoi[{i}] = {[w, s, e, n]} is not [min_lon, min_lat, max_lon, max_lat] "
                    "with min < max inside -180..180 / -90..90"
                )
        return v

    @property
    def uses_world(self) -> bool:
        return "world" in (self.sources.sentinel2.api, self.sources.worldcover.api)

    def to_yaml(self) -> str:
        """The resolved configuration, defaults included, as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid configuration ({err.error_count()} problem(s)):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            hint = "unknown key; remove it or check its spelling (`cen config show` lists keys)"
            if key.endswith("api_key"):
                hint = "API keys never go in config files: set api_key_env to a variable name"
            lines.append(f"  - {key}: {hint}")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"  - {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> RunConfig:
    """Validate an already-parsed mapping into a :class:`RunConfig`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: top level must be a mapping of keys, got {type(data).__name__}"
        )
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e)) from e


def load_cluster_spec(path: str | Path) -> ClusterConfig:
    """Read a cluster spec (a YAML file whose ``cluster:`` block is a :class:`ClusterConfig`,
    such as ``cluster/slurm.yaml``); the block may also be the whole file."""
    p = Path(path)
    data = _read_yaml(
        p,
        f"--cluster {p}: no such file; pass a spec such as cluster/local.yaml, "
        "cluster/scheduler.yaml, cluster/slurm.yaml or cluster/kubernetes.yaml",
    )
    if isinstance(data, dict) and "cluster" in data:
        if set(data) != {"cluster"}:
            raise ConfigError(
                f"{p}: a run configuration, not a cluster spec; pass a file that holds only a "
                "`cluster:` block (cluster/*.yaml), or run that configuration itself"
            )
        data = data["cluster"]
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a cluster spec is a mapping (a `cluster:` block)")
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(f"{p} (cluster)", e)) from e


def with_cluster(
    cfg: RunConfig, spec: str | Path | None = None, scheduler: str | None = None
) -> RunConfig:
    """``cfg`` with its cluster replaced by a spec file (``--cluster``) or a scheduler address
    (``--scheduler``, which keeps the config's TLS settings); the flags win over the config."""
    if spec is not None and scheduler is not None:
        raise ConfigError("--cluster and --scheduler: give one of them, not both")
    if spec is not None:
        return cfg.model_copy(update={"cluster": load_cluster_spec(spec)})
    if scheduler is not None:
        try:
            cc = ClusterConfig(kind="address", address=scheduler, tls=cfg.cluster.tls)
        except ValidationError as e:
            raise ConfigError(_format_errors("--scheduler", e)) from e
        return cfg.model_copy(update={"cluster": cc})
    return cfg


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run configuration."""
    p = Path(path)
    data = _read_yaml(
        p,
        f"{p}: configuration file not found; pass the path to a YAML file "
        "(see configs/demo.yaml for an example)",
    )
    return parse_config(data, str(p))


def _read_yaml(p: Path, missing: str) -> Any:
    """The YAML document in ``p``; ConfigError ``missing`` when there is no such file."""
    if not p.is_file():
        raise ConfigError(missing)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from e
