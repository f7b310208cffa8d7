"""The search stage on a real cluster against the demo world's real STAC APIs."""

from __future__ import annotations

import json
from pathlib import Path

from distributed import Client

from cenlib.config import load_config
from cenlib.search.stage import Aoi, run_search
from cenlib.stac.search import SearchRequest, search

REPO = Path(__file__).resolve().parents[2]
DOLOMITES = (11.3, 46.3, 12.3, 46.8)


def test_a_cloudy_scene_is_counted_once_however_many_groups_see_it(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml").model_copy(update={"output": tmp_path})
    urls = {"sentinel2": world_apis["earth-search"], "worldcover": world_apis["planetary-computer"]}
    one = search(
        SearchRequest(
            urls["sentinel2"],
            "sentinel-2-l2a",
            DOLOMITES,
            cfg.time.interval,
            cfg.thresholds.max_cloud_cover,
        )
    )
    assert one.dropped_cloudy, "the Dolomites have a cloudy scene in the window"
    aois = [Aoi("a", DOLOMITES), Aoi("b", DOLOMITES), Aoi("c", DOLOMITES)]
    summary = run_search(cfg, urls, aois, dask_client, tmp_path, sources=("sentinel2",))
    assert summary["dropped_cloudy"] == len(set(one.dropped_cloudy))
    # The stage writes only its own failure records and keeps other stages'.
    (tmp_path / "failures.jsonl").write_text(json.dumps({"stage": "plan", "reason": "x"}) + "\n")
    run_search(cfg, urls, aois, dask_client, tmp_path, sources=("sentinel2",))
    kept = (tmp_path / "failures.jsonl").read_text().splitlines()
    assert [json.loads(ln)["stage"] for ln in kept] == ["plan"]
