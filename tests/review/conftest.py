"""A small run to review: the session's Dolomites run (ingested and analysed, see the top
conftest) with verdicts written here; each test gets a copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from review_support import copy_run, verdict_rows, write_verdicts

from cenlib.ingest import array, open_group


@pytest.fixture(scope="session")
def review_base(tmp_path_factory: pytest.TempPathFactory, dolomites_run: Path) -> Path:
    out = tmp_path_factory.mktemp("review") / "base"
    shutil.copytree(dolomites_run, out)
    g = open_group(str(out / "dataset.zarr"))
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
