"""The plan stage's entry: WorldCover search around the candidates, the draw, the table.

For ``plan.source: area`` WorldCover is searched once per area; for a list file once per group
of nearby listed patches, so that a list plan gets the same coverage estimate (and ``stratify``
something to work with) as an area plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from cenlib.config import RunConfig
from cenlib.grid import grid_for
from cenlib.plan.stage import PlanError, make_plan, patches_from_list, write_plan
from cenlib.search import Aoi, SearchSummary, patch_groups, read_items, run_search
from cenlib.summary import Summary

PLAN = "plan.parquet"
AREAS_DIR = "search-areas"


@dataclass(frozen=True)
class PlanSummary(Summary):
    patches: int
    by_dominant_class: dict[str, int] = field(default_factory=dict)
    search: SearchSummary | None = None
    file: str = ""

    def line(self) -> str:
        return f"plan: {self.patches} patches; dominant classes {self.by_dominant_class}"


def plan_path(run_dir: Path) -> Path:
    return Path(run_dir) / PLAN


def search_areas(cfg: RunConfig, aois: Sequence[Aoi]) -> list[Aoi]:
    """Where the plan searches WorldCover: the areas, or the groups of a list's patches."""
    if cfg.plan.source == "list":
        assert cfg.plan.list_file is not None  # the config validator guarantees it
        keys = patches_from_list(cfg.plan.list_file, grid_for(cfg.grid))
        return [g for g, _ in patch_groups(keys)]
    return list(aois)


def run_plan(
    cfg: RunConfig,
    client: Client,
    urls: dict[str, str],
    aois: Sequence[Aoi],
    on_search: Callable[[int], Callable[[str], None]] | None = None,
) -> PlanSummary:
    """Plan the run: WorldCover items around the candidates, then :func:`make_plan`, written to
    ``<run>/plan.parquet``. ``on_search(n)`` may return a callback ticked once per search."""
    out = cfg.output
    where = search_areas(cfg, aois)
    tick = on_search(len(where)) if on_search else None
    search = run_search(
        cfg, urls, where, client, out, tick, sources=("worldcover",), subdir=AREAS_DIR
    )
    if where and search.failed == len(where):
        raise PlanError(
            f"every WorldCover search failed ({cfg.sources.worldcover.collection} at "
            f"{urls['worldcover']}); see {out / 'failures.jsonl'}; check "
            "sources.worldcover.api and that the API is up"
        )
    wc_items = read_items(out / AREAS_DIR, "worldcover")
    plan = make_plan(cfg, [(a.name, a.bbox) for a in aois], wc_items)
    write_plan(plan, plan_path(out))
    counts = plan["wc_dominant"].value_counts().sort_index()
    return PlanSummary(
        patches=len(plan),
        by_dominant_class={str(k): int(v) for k, v in counts.items()},
        search=search,
        file=str(plan_path(out)),
    )
