"""Stage *search*: find Sentinel-2 and WorldCover items for groups of patches, on Dask.

One search per group of nearby patches (or per area of interest) and source, never one per
patch. Results land in ``<run>/<subdir>/``: ``<source>.ndjson`` (unique items, sorted by id),
``by_group.json`` (item ids per group) and failures in ``<run>/failures.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, as_completed, span

from cenlib.config import RunConfig
from cenlib.errors import CenError
from cenlib.grid import PatchKey, patch_xy
from cenlib.io import replace_failures
from cenlib.stac.search import SearchRequest, search
from cenlib.stac.signatures import mask_signature
from cenlib.summary import Summary

SOURCES = ("sentinel2", "worldcover")
GROUP_LEVEL = 5  # a group spans 2**5 x 2**5 patches: about 160 km at ChatEarthNet's zoom 13


@dataclass(frozen=True)
class Aoi:
    """A named lon/lat box: an area of interest, or the extent of a group of patches."""

    name: str
    bbox: tuple[float, float, float, float]


class SearchFailedError(CenError, RuntimeError):
    """Every search of a source failed: nothing to go on with."""


@dataclass(frozen=True)
class SearchSummary(Summary):
    groups: int
    searches: int
    failed: int
    failed_by_source: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    dropped_cloudy: int = 0
    cloud_filter: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"search: {self.searches} searches over {self.groups} groups, {self.failed} failed; "
            f"items: {self.items}; cloudy scenes dropped: {self.dropped_cloudy} "
            f"(cloud filter: {', '.join(self.cloud_filter) or 'n/a'})"
        )

    def check(self, cfg: RunConfig, urls: dict[str, str], out: Path) -> None:
        """Raise when every search of a source failed (a wrong URL, an API down)."""
        for src, n in self.failed_by_source.items():
            if self.groups and n == self.groups:
                sc = getattr(cfg.sources, src)
                raise SearchFailedError(
                    f"every {src} search failed ({sc.collection} at {urls[src]}); see "
                    f"{out / 'failures.jsonl'}; check sources.{src}.api and that the API is up"
                )


def patch_groups(
    keys: list[PatchKey], level: int = GROUP_LEVEL
) -> list[tuple[Aoi, list[PatchKey]]]:
    """Nearby patches grouped into blocks of 2**level x 2**level, each with its lon/lat extent."""
    blocks: dict[tuple[str, int, int, int], list[PatchKey]] = {}
    for k in keys:
        px, py = patch_xy(k)
        blocks.setdefault((k.grid, k.zone, px >> level, py >> level), []).append(k)
    out = []
    for (grid, zone, bx, by), ks in sorted(blocks.items()):
        bounds = [k.lonlat_polygon().boundingbox for k in ks]
        bbox = (
            min(b.left for b in bounds),
            min(b.bottom for b in bounds),
            max(b.right for b in bounds),
            max(b.top for b in bounds),
        )
        out.append((Aoi(f"{grid}-{zone}-{bx}-{by}", bbox), ks))
    return out


def _masked(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with the signature of each asset href masked: a catalogue that hands out signed
    hrefs must not leave its tokens in the run directory (ingest signs them afresh)."""
    assets = {
        k: {**a, "href": mask_signature(a["href"])} if "href" in a else a
        for k, a in item.get("assets", {}).items()
    }
    return {**item, "assets": assets}


def read_items(folder: Path, source: str) -> list[dict[str, Any]]:
    """The unique items a search stage wrote for one source."""
    path = folder / f"{source}.ndjson"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _search_task(source: str, aoi: Aoi, req: SearchRequest) -> dict[str, Any]:
    """Runs on a worker: returns plain data, or a failure record with its reason."""
    try:
        res = search(req)
    except Exception as e:  # recorded, never dropped: the run summary lists it
        return {
            "ok": False,
            "source": source,
            "aoi": aoi.name,
            "url": req.url,
            "collection": req.collection,
            "error": f"{type(e).__name__}: {e}",
        }
    return {
        "ok": True,
        "source": source,
        "aoi": aoi.name,
        "cloud_filter": res.cloud_filter,
        "dropped_cloudy": res.dropped_cloudy,
        "items": [i.to_dict() for i in res.items],
    }


def requests_for(
    cfg: RunConfig, urls: dict[str, str], aois: list[Aoi], sources: tuple[str, ...] = SOURCES
) -> list[tuple[str, Aoi, SearchRequest]]:
    out = []
    for aoi in aois:
        for source in sources:
            sc = getattr(cfg.sources, source)
            is_s2 = source == "sentinel2"
            out.append(
                (
                    source,
                    aoi,
                    SearchRequest(
                        url=urls[source],
                        collection=sc.collection,
                        bbox=aoi.bbox,
                        datetime=cfg.time.interval if is_s2 else None,
                        max_cloud_cover=cfg.thresholds.max_cloud_cover if is_s2 else None,
                    ),
                )
            )
    return out


def run_search(
    cfg: RunConfig,
    urls: dict[str, str],
    aois: list[Aoi],
    client: Client,
    out: Path,
    on_done: Callable[[str], None] | None = None,
    sources: tuple[str, ...] = SOURCES,
    subdir: str = "search",
) -> SearchSummary:
    """Search every (area, source) pair on the cluster and write the results to `out/subdir`."""
    reqs = requests_for(cfg, urls, aois, sources)
    with span("search"):  # groups the stage's tasks in the dashboard's span views
        futures = [
            client.submit(_search_task, s, a, r, key=f"{subdir}-{s}-{a.name}", pure=False)
            for s, a, r in reqs
        ]
    results: list[dict[str, Any]] = []
    for fut in as_completed(futures):
        results.append(fut.result())
        if on_done:
            on_done(fut.key if isinstance(fut.key, str) else str(fut.key))
    results.sort(key=lambda r: (r["source"], r["aoi"]))
    folder = out / subdir
    folder.mkdir(parents=True, exist_ok=True)
    by_aoi: dict[str, dict[str, list[str]]] = {a.name: {} for a in aois}
    unique: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in sources}
    failures = []
    dropped: set[tuple[str, str]] = set()  # (source, item id): a scene once, however many groups
    for r in results:
        if not r["ok"]:
            failures.append({"stage": subdir, **{k: v for k, v in r.items() if k != "ok"}})
            continue
        by_aoi[r["aoi"]][r["source"]] = [i["id"] for i in r["items"]]
        dropped.update((r["source"], i) for i in r["dropped_cloudy"])
        for i in r["items"]:
            unique[r["source"]][i["id"]] = i
    for s, its in unique.items():
        with open(folder / f"{s}.ndjson", "w", encoding="utf-8") as f:
            for iid in sorted(its):
                f.write(json.dumps(_masked(its[iid])) + "\n")
    (folder / "by_group.json").write_text(json.dumps(by_aoi, indent=1) + "\n")
    replace_failures(out, [subdir], failures)  # this stage's own records, nobody else's
    return SearchSummary(
        groups=len(aois),
        searches=len(reqs),
        failed=len(failures),
        failed_by_source={src: sum(f["source"] == src for f in failures) for src in sources},
        items={s: len(v) for s, v in unique.items()},
        dropped_cloudy=len(dropped),
        cloud_filter=sorted(
            {r["cloud_filter"] for r in results if r["ok"] and r["source"] == "sentinel2"}
        ),
    )


def search_patches(
    cfg: RunConfig,
    urls: dict[str, str],
    keys: list[PatchKey],
    client: Client,
    on_done: Callable[[str], None] | None = None,
) -> SearchSummary:
    """Both sources for the groups of nearby ``keys`` (into ``<run>/search``); raises
    :class:`SearchFailedError` when every search of a source failed."""
    groups = [g for g, _ in patch_groups(keys)]
    summary = run_search(cfg, urls, groups, client, cfg.output, on_done)
    summary.check(cfg, urls, cfg.output)
    return summary
