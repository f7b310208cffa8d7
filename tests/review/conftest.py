"""A small run to review, built once per session: the demo world's Dolomites patches ingested
and analysed on the session's cluster, with verdicts written here; each test gets a copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from review_support import copy_run, verdict_rows, write_verdicts

from cenlib.analysis import analyze_store
from cenlib.config import parse_config
from cenlib.grid import Grid
from cenlib.ingest import array, open_group
from cenlib.ingest.stage import ingest_patches
from cenlib.stac.search import SearchRequest, search

DOLOMITES = (11.97, 46.56, 12.03, 46.61)


@pytest.fixture(scope="session")
def review_base(
    tmp_path_factory: pytest.TempPathFactory, world_apis: dict[str, str], dask_client: Client
) -> Path:
    out = tmp_path_factory.mktemp("review") / "base"
    cfg = parse_config({"output": str(out), "ingest": {"shard_patches": 4}})
    s2 = search(
        SearchRequest(world_apis["earth-search"], "sentinel-2-l2a", DOLOMITES, cfg.time.interval)
    ).items
    wc = search(SearchRequest(world_apis["planetary-computer"], "esa-worldcover", DOLOMITES)).items
    keys = list(Grid().covering(DOLOMITES))
    s = ingest_patches(
        cfg, keys, [i.to_dict() for i in s2], [i.to_dict() for i in wc], world_apis, dask_client
    )
    analyze_store(s["store"], dask_client, out)
    g = open_group(s["store"])
    ids = np.asarray(array(g, "patch_id")[:])
    ok = [
        str(i) for i, st in zip(ids, np.asarray(array(g, "status")[:]), strict=True) if st == "ok"
    ]
    assert len(ok) >= 5, f"the review tests need 5 ok patches, the store has {len(ok)}"
    write_verdicts(out, verdict_rows(ok))
    return out


@pytest.fixture
def run_dir(review_base: Path, tmp_path: Path) -> Path:
    """A fresh run directory (no decisions yet) on the session's store."""
    return copy_run(review_base, tmp_path / "run")
