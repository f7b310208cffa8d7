"""Shared fixtures: synthetic worlds built once per session, real fixtures, served APIs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from hypothesis import settings

from cenlib.stac.server import serve, serve_world
from cenlib.world.build import build_world

# CI runs hypothesis from a fixed seed, so a landing never hangs on a fresh random draw;
# `make test` elsewhere explores new examples every run (and keeps failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The caption tests' API key: a canary (no such key exists anywhere), set before the session's
# cluster starts so that its worker processes inherit it; tests grep every output for it.
CANARY_KEY = "sk-cen-canary-7d3f9a1e5b"
os.environ["CEN_TEST_API_KEY"] = CANARY_KEY

REPO = Path(__file__).resolve().parents[1]
# A copy of the workplace's shared/fixtures/real (read-only there), kept in the repository so
# that a clone anywhere can run the tests. Its README says where each file comes from.
REAL = REPO / "tests" / "fixtures" / "real"


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    if not REAL.is_dir():
        pytest.fail(f"real fixtures missing at {REAL}; restore them from git")
    return REAL


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo preset, built fresh once per test session."""
    out = tmp_path_factory.mktemp("worlds") / "demo-seed0"
    build_world(out, "demo", 0)
    return out


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset (seed 0), built once per test session."""
    out = tmp_path_factory.mktemp("worlds") / "tiny-seed0"
    build_world(out, "tiny", 0)
    return out


@pytest.fixture(scope="session")
def world_apis(demo_world: Path) -> Iterator[dict[str, str]]:
    with serve_world(demo_world) as urls:
        yield urls


@pytest.fixture(scope="session")
def real_api(real_fixtures: Path) -> Iterator[str]:
    with serve([real_fixtures]) as url:
        yield url


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Client]:
    """A real LocalCluster: two worker processes, as the job uses by default."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as c,
        Client(c) as client,
    ):
        yield client


DOLOMITES = (11.97, 46.56, 12.03, 46.61)


@pytest.fixture(scope="session")
def dolomites_run(
    tmp_path_factory: pytest.TempPathFactory, world_apis: dict[str, str], dask_client: Client
) -> Path:
    """A run directory with the demo world's Dolomites patches ingested and analysed, built once
    per session for the stages after analyze; tests copy it (`shutil.copytree`) before writing."""
    from cenlib.analysis import analyze_store
    from cenlib.config import parse_config
    from cenlib.grid import Grid
    from cenlib.ingest.stage import ingest_patches
    from cenlib.stac.search import SearchRequest, search

    out = tmp_path_factory.mktemp("dolomites") / "run"
    cfg = parse_config({"output": str(out), "ingest": {"shard_patches": 4}})
    s2 = search(
        SearchRequest(world_apis["earth-search"], "sentinel-2-l2a", DOLOMITES, cfg.time.interval)
    ).items
    wc = search(SearchRequest(world_apis["planetary-computer"], "esa-worldcover", DOLOMITES)).items
    s = ingest_patches(
        cfg,
        list(Grid().covering(DOLOMITES)),
        [i.to_dict() for i in s2],
        [i.to_dict() for i in wc],
        {"sentinel2": world_apis["earth-search"], "worldcover": world_apis["planetary-computer"]},
        dask_client,
    )
    a = analyze_store(s["store"], dask_client, out)
    assert a["ok"] == s["ok"] > 0
    return out
