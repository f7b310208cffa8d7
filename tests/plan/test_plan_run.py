"""The plan stage's entry against real STAC APIs on loopback: area and list plans."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pystac
import pytest
from distributed import Client
from rich.console import Console

from cenlib.config import PlanConfig, RunConfig, SourceConfig, SourcesConfig
from cenlib.job import JobError, source_urls
from cenlib.plan import make_plan, read_plan, run_plan
from cenlib.stac.server import serve_world


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> Path:
    return tiny_world


@pytest.fixture(scope="module")
def apis(world: Path) -> Iterator[dict[str, str]]:
    with serve_world(world) as urls:
        yield urls


def _sources(apis: dict[str, str]) -> SourcesConfig:
    """Sources given by URL, as a user of real APIs writes them (not ``api: world``)."""
    return SourcesConfig(
        sentinel2=SourceConfig(api=apis["earth-search"], collection="sentinel-2-l2a"),
        worldcover=SourceConfig(
            api=apis["planetary-computer"],
            collection="esa-worldcover",
            dialect="planetary-computer",
        ),
    )


@pytest.mark.slow
def test_a_list_plan_needs_no_aoi_and_gets_the_worldcover_estimate(
    tmp_path: Path, world: Path, apis: dict[str, str], dask_client: Client
) -> None:
    w, s, e, n = json.loads((world / "world.json").read_text())["areas"][0]["bbox"]
    points = tmp_path / "points.csv"
    points.write_text(f"lon,lat\n{(w + e) / 2},{(s + n) / 2}\n{w + (e - w) / 4},{(s + n) / 2}\n")
    cfg = RunConfig(
        output=tmp_path / "run",
        sources=_sources(apis),
        plan=PlanConfig(source="list", list_file=points),
    )
    assert cfg.aoi == "world"  # the default, which a list plan never reads
    with source_urls(cfg, Console(quiet=True)) as (urls, aois):
        assert aois == []
        summary = run_plan(cfg, dask_client, urls, aois)
    plan = read_plan(tmp_path / "run" / "plan.parquet")
    assert summary.patches == len(plan) == 2 and list(plan["aoi"]) == ["list", "list"]
    # The same estimate as from every WorldCover item of the world (found by the search).
    files = sorted((world / "stac/planetary-computer/items/esa-worldcover").glob("*.json"))
    every = make_plan(cfg, [], [pystac.Item.from_file(f).to_dict() for f in files])
    assert list(plan["wc_valid_fraction"]) == list(every["wc_valid_fraction"])
    assert list(plan["wc_dominant"]) == list(every["wc_dominant"])
    assert (plan["wc_valid_fraction"] > 0.5).all() and "background" not in set(plan["wc_dominant"])
    assert summary.search is not None and summary.search.failed == 0
    assert summary.search.items["worldcover"] >= 1
    assert sum(summary.by_dominant_class.values()) == 2


@pytest.mark.slow
def test_an_area_plan_without_areas_says_how_to_give_them(
    tmp_path: Path, apis: dict[str, str]
) -> None:
    cfg = RunConfig(output=tmp_path / "run", sources=_sources(apis))
    with pytest.raises(JobError, match=r"aoi: 'world'.*list of \[min_lon"):  # noqa: SIM117
        with source_urls(cfg, Console(quiet=True)):
            pass
