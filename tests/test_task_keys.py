"""Same config, same inputs, same task keys: every stage run twice on the same run directory.

The scheduler records the key of every task submitted to it (a scheduler plugin); the stages
run once, their outputs are removed, and they run again. A key made of a time, an mtime or a
random draw would differ between the passes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin

from cenlib.analysis import analyze_store
from cenlib.captions.stage import run_captions
from cenlib.config import CaptionConfig, EndpointConfig, RunConfig, parse_config
from cenlib.grid import Grid
from cenlib.ingest import ingest_patches
from cenlib.prompts import run_prompts
from cenlib.search import Aoi, read_items, run_search

DOLOMITES = (11.97, 46.56, 12.03, 46.61)


class KeyLog(SchedulerPlugin):
    """Keys of the tasks each ``update_graph`` brings to the scheduler."""

    name = "cen-test-key-log"

    def __init__(self) -> None:
        self.keys: list[str] = []

    def update_graph(self, scheduler: Any, *, keys: set[Any], **kwargs: Any) -> None:
        self.keys.extend(str(k) for k in keys)


def _keys(client: Client) -> list[str]:
    def read(dask_scheduler: Any) -> list[str]:
        log = dask_scheduler.plugins[KeyLog.name]
        keys, log.keys = log.keys, []
        return list(keys)

    return sorted(client.run_on_scheduler(read))


def _every_stage(cfg: RunConfig, urls: dict[str, str], client: Client) -> dict[str, list[str]]:
    out, seen = cfg.output, {}
    run_search(cfg, urls, [Aoi("dolomites", DOLOMITES)], client, out)
    seen["search"] = _keys(client)
    s2, wc = read_items(out / "search", "sentinel2"), read_items(out / "search", "worldcover")
    store = ingest_patches(cfg, list(Grid().covering(DOLOMITES)), s2, wc, urls, client).store
    seen["ingest"] = _keys(client)
    analyze_store(store, client, out)
    seen["analyze"] = _keys(client)
    run_prompts(cfg, client)
    seen["prompt"] = _keys(client)
    run_captions(cfg.caption, out, client)
    seen["caption"] = _keys(client)
    return seen


def test_every_stage_gives_the_same_task_keys_twice(
    tmp_path: Path, world_apis: dict[str, str], dask_client: Client
) -> None:
    cfg = parse_config({"output": str(tmp_path / "run"), "ingest": {"shard_patches": 4}})
    cfg = cfg.model_copy(
        update={"caption": CaptionConfig(endpoints=(EndpointConfig(kind="rules"),))}
    )
    urls = {"sentinel2": world_apis["earth-search"], "worldcover": world_apis["planetary-computer"]}
    dask_client.register_plugin(KeyLog(), name=KeyLog.name)
    try:
        first = _every_stage(cfg, urls, dask_client)
        shutil.rmtree(cfg.output)  # nothing left to skip: every task runs again
        second = _every_stage(cfg, urls, dask_client)
        # ... and the keys follow the inputs: another prompt seed, other prompt tasks.
        reseeded = cfg.model_copy(update={"prompt": cfg.prompt.model_copy(update={"seed": 1})})
        run_prompts(reseeded, dask_client)
        other = _keys(dask_client)
    finally:
        dask_client.unregister_scheduler_plugin(KeyLog.name)
    for stage, keys in first.items():
        assert keys, f"{stage}: no task seen"
        assert second[stage] == keys, stage
    assert all(k.startswith("search-") for k in first["search"])
    assert all(k.startswith("caption-") for k in first["caption"])
    assert other and not set(other) & set(first["prompt"])
