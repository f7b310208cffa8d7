"""Stage *search*: find Sentinel-2 and WorldCover items for every area of interest, on Dask.

One search per area and source (never one per patch). Results land in ``<run>/search/``:
``<source>.ndjson`` (unique items), ``by_aoi.json`` (item ids per area) and failures in
``<run>/failures.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import Client, as_completed, span

from cenlib.config import RunConfig
from cenlib.stac.search import SearchRequest, search

SOURCES = ("sentinel2", "worldcover")


@dataclass(frozen=True)
class Aoi:
    name: str
    bbox: tuple[float, float, float, float]


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
    cfg: RunConfig, urls: dict[str, str], aois: list[Aoi]
) -> list[tuple[str, Aoi, SearchRequest]]:
    out = []
    for aoi in aois:
        for source in SOURCES:
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
) -> dict[str, Any]:
    """Search every (area, source) pair on the cluster and write the results under `out`."""
    reqs = requests_for(cfg, urls, aois)
    with span("search"):  # groups the stage's tasks in the dashboard's span views
        futures = [
            client.submit(_search_task, s, a, r, key=f"search-{s}-{a.name}", pure=False)
            for s, a, r in reqs
        ]
    results: list[dict[str, Any]] = []
    for fut in as_completed(futures):
        results.append(fut.result())
        if on_done:
            on_done(fut.key if isinstance(fut.key, str) else str(fut.key))
    results.sort(key=lambda r: (r["source"], r["aoi"]))
    (out / "search").mkdir(parents=True, exist_ok=True)
    by_aoi: dict[str, dict[str, list[str]]] = {a.name: {} for a in aois}
    unique: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SOURCES}
    failures = []
    dropped = 0
    for r in results:
        if not r["ok"]:
            failures.append({"stage": "search", **{k: v for k, v in r.items() if k != "ok"}})
            continue
        by_aoi[r["aoi"]][r["source"]] = [i["id"] for i in r["items"]]
        dropped += len(r["dropped_cloudy"])
        for i in r["items"]:
            unique[r["source"]][i["id"]] = i
    for s, its in unique.items():
        with open(out / "search" / f"{s}.ndjson", "w", encoding="utf-8") as f:
            for iid in sorted(its):
                f.write(json.dumps(its[iid]) + "\n")
    (out / "search" / "by_aoi.json").write_text(json.dumps(by_aoi, indent=1) + "\n")
    with open(out / "failures.jsonl", "a", encoding="utf-8") as f:
        for rec in failures:
            f.write(json.dumps(rec) + "\n")
    return {
        "aois": len(aois),
        "searches": len(reqs),
        "failed": len(failures),
        "items": {s: len(v) for s, v in unique.items()},
        "dropped_cloudy": dropped,
        "cloud_filter": sorted(
            {r["cloud_filter"] for r in results if r["ok"] and r["source"] == "sentinel2"}
        ),
    }
