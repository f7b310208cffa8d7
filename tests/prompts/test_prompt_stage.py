"""Stages analyze and prompt on a real store, and `cen prompt preview` on the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from cenlib.analysis import region_counts
from cenlib.config import ConfigError, RunConfig, parse_config
from cenlib.ingest.store import open_group
from cenlib.prompts import PROMPTS, PatchContext, get_style, read_prompts, run_prompts

DOLOMITES = (11.97, 46.56, 12.03, 46.61)
REGION_NAMES = ["top left", "top right", "bottom left", "bottom right", "middle"]


@pytest.fixture(scope="module")
def analysed(
    tmp_path_factory: pytest.TempPathFactory, dolomites_run: Path
) -> tuple[RunConfig, str]:
    out = tmp_path_factory.mktemp("prompting") / "run"
    shutil.copytree(dolomites_run, out)
    cfg = parse_config({"output": str(out), "ingest": {"shard_patches": 4}})
    return cfg, str(out / "dataset.zarr")


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("style", ["chatearthnet-3.5", "cen-layout", "chatearthnet-4v"])
def test_prompts_for_every_ok_patch(
    analysed: tuple[RunConfig, str], dask_client: Client, style: str
) -> None:
    base, url = analysed
    cfg = base.model_copy(update={"prompt": base.prompt.model_copy(update={"style": style})})
    first = run_prompts(cfg, dask_client, url)
    recs = _read(cfg.output / PROMPTS)
    g = open_group(url)
    ok_ids = [str(i) for i, st in zip(g["patch_id"][:], g["status"][:], strict=True) if st == "ok"]
    assert [r["patch_id"] for r in recs] == ok_ids and first["prompts"] == len(ok_ids)
    assert all(r["style"] == f"{style}@1" and len(r["key"]) == 64 for r in recs)
    assert len({r["key"] for r in recs}) == len(recs)  # distinct patches, distinct prompts
    # Re-running reuses every part and gives the same bytes.
    before = (cfg.output / PROMPTS).read_bytes()
    again = run_prompts(cfg, dask_client, url)
    assert again["parts_skipped"] > 0 and (cfg.output / PROMPTS).read_bytes() == before
    if style == "chatearthnet-4v":
        parts = recs[0]["messages"][-1]["content"]
        assert any(p.get("type") == "image_url" for p in parts)
    # Each record carries the facts its messages were rendered from, before the messages.
    assert all(list(r) == ["patch_id", "style", "seed", "key", "facts", "messages"] for r in recs)
    assert [p.facts for p in read_prompts(cfg.output)] == [r["facts"] for r in recs]
    for r in recs:
        if style == "cen-layout":  # its facts need the layout columns as well
            assert set(r["facts"]) == {"classes", "grid", "no_data"}
        else:
            assert r["facts"] == _facts(g, style, cfg.prompt.seed, r["patch_id"])


def _facts(g: Any, style: str, seed: int, pid: str) -> Any:
    """A patch's facts, rebuilt from the store's counts (through JSON, like the file)."""
    ids = [str(x) for x in g["patch_id"][:]]
    counts = np.asarray(g["region_counts"][ids.index(pid)])
    ctx = PatchContext.from_counts(counts, int(g["land_cover"].shape[-1]))
    return json.loads(json.dumps(get_style(style).describe(ctx, seed, pid)))


def test_analysis_table_matches_the_kernel(analysed: tuple[RunConfig, str]) -> None:
    cfg, url = analysed
    table = pd.read_parquet(cfg.output / "analysis.parquet")
    g = open_group(url)
    ok = np.asarray(g["status"][:]) == "ok"
    labels = np.asarray(g["land_cover"][:])[ok]
    direct = region_counts(labels)
    assert np.array_equal(np.asarray(g["region_counts"][:])[ok], direct)
    assert list(table["patch_id"]) == [str(x) for x in g["patch_id"][:]]
    water = table.loc[ok, "count_whole_water"].to_numpy()
    assert np.array_equal(water, (labels == 1).sum(axis=(1, 2)))


@pytest.mark.e2e
def test_cli_preview_prints_the_documented_json(tmp_path: Path) -> None:
    maps = np.zeros((2, 256, 256), np.uint8)
    maps[0, :, :128] = 1  # water on the left half, tree on the right
    maps[0, :, 128:] = 3
    maps[1, :128, :128] = 2  # developed area in the top-left quadrant only
    path = tmp_path / "maps.npy"
    np.save(path, maps)
    cen = str(Path(sys.executable).parent / "cen")
    args = [cen, "prompt", "preview", "--labels", str(path), "--seed", "3"]
    r = subprocess.run([*args, "--style", "chatearthnet-3.5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(objs) == 2 and set(objs[0]) == {"overall", "regions", "scattered", "messages"}
    assert objs[0]["overall"] == ["water", "tree"]  # a tie: the lower class index first
    assert list(objs[0]["regions"]) == REGION_NAMES
    assert objs[0]["regions"]["top left"] == [
        {"class": "water", "percent": 100, "bin": "extra large"}
    ]
    assert objs[0]["regions"]["middle"] == [
        {"class": "water", "percent": 50, "bin": "large"},
        {"class": "tree", "percent": 50, "bin": "large"},
    ]
    assert objs[1]["regions"]["bottom right"] == []  # all background: nothing to list
    assert objs[1]["scattered"] == []  # ... and no land cover at all, not scattered pixels
    assert [m["role"] for m in objs[0]["messages"]] == ["system", "user"]
    again = subprocess.run([*args, "--style", "chatearthnet-3.5"], capture_output=True, text=True)
    assert again.stdout == r.stdout  # seeded
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((1, 256, 256), 12, np.uint8))
    r = subprocess.run(
        [cen, "prompt", "preview", "--labels", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "class indices 0..11" in r.stderr


def test_4v_groups_patches_per_request_with_fallbacks(
    analysed: tuple[RunConfig, str], dask_client: Client
) -> None:
    base, url = analysed
    prompt = base.prompt.model_copy(update={"style": "chatearthnet-4v", "per_request": 4})
    cfg = base.model_copy(update={"prompt": prompt})
    run_prompts(cfg, dask_client, url)
    recs = _read(cfg.output / PROMPTS)
    g = open_group(url)
    ok_ids = [str(i) for i, st in zip(g["patch_id"][:], g["status"][:], strict=True) if st == "ok"]
    assert [pid for r in recs for pid in r["patch_ids"]] == ok_ids  # each once, in order
    for r in recs:
        n = len(r["patch_ids"])
        assert 1 <= n <= 4 and r["patch_id"] == ",".join(r["patch_ids"])
        images = [p for p in r["messages"][-1]["content"] if p["type"] == "image_url"]
        assert len(images) == n and len(r["fallback"]) == n
        # Each fallback is exactly the patch's own single-patch request.
        for fb in r["fallback"]:
            assert sum(p["type"] == "image_url" for p in fb[-1]["content"]) == 1
        # The facts: a list aligned with patch_ids, each the patch's own.
        assert r["facts"] == [
            _facts(g, "chatearthnet-4v", cfg.prompt.seed, p) for p in r["patch_ids"]
        ]
    assert max(len(r["patch_ids"]) for r in recs) == 4


def test_per_request_is_only_for_4v() -> None:
    with pytest.raises(ConfigError, match="per_request"):
        parse_config({"prompt": {"style": "chatearthnet-3.5", "per_request": 2}})
