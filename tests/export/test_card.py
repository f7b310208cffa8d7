"""The dataset card: every figure in it equals the same figure recomputed from the exported
files (the Parquet parts read with pandas, the file tree), and an export to an fsspec URL."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from distributed import Client

from cenlib.captions import run_captions
from cenlib.classes import CLASS_NAMES
from cenlib.config import parse_config
from cenlib.export import LAYOUT, run_export
from cenlib.prompts import run_prompts
from cenlib.review.db import record
from cenlib.verify import read_verdicts, run_verify


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, dolomites_run: Path, dask_client: Client
) -> Path:
    out = tmp_path_factory.mktemp("card") / "run"
    shutil.copytree(dolomites_run, out)
    cfg = parse_config(
        {"output": str(out), "export": {"formats": ["chatearthnet", "parquet"], "batch": 4}}
    )
    run_prompts(cfg, dask_client)
    run_captions(cfg.caption, out, dask_client)
    run_verify(cfg, dask_client)
    v = next(iter(read_verdicts(out)))
    record(out, v.patch_id, v.key, "edit", "tester", text="A caption edited in review.")
    run_export(cfg, dask_client)
    return out / LAYOUT


def _table(root: Path, heading: str) -> dict[str, Any]:
    """The two-column table that follows ``heading`` in the card (first column -> second)."""
    text = (root / "README.md").read_text()
    at = text.index(f"| {heading} |")
    rows = {}
    for line in text[at:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1] if len(cells) == 2 else cells[1:]
    return rows


def test_card_figures_equal_the_data(exported: Path) -> None:
    df = pd.read_parquet(exported / "parquet")
    card = (exported / "README.md").read_text()
    assert _table(exported, "split") == {
        s: str(int((df["split"] == s).sum())) for s in ("train", "validation", "test")
    }
    assert _table(exported, "verification") == {
        k: str(v) for k, v in Counter(df["verification"]).items()
    }
    review = Counter(r or "not reviewed" for r in df["review"])
    assert _table(exported, "review") == {k: str(v) for k, v in review.items()}
    assert review["edit"] == 1
    assert _table(exported, "model") == {k: str(v) for k, v in Counter(df["model"]).items()}
    assert f"{len(df)} Sentinel-2 L2A patches" in card
    s2 = {i for ids in df["sentinel2_items"] for i in ids}
    wc = {i for ids in df["worldcover_items"] for i in ids}
    assert f"{len(s2)} Sentinel-2 items and {len(wc)} WorldCover items" in card
    assert all(i in card for i in s2 | wc)
    fractions = [json.loads(s) for s in df["class_fractions"]]
    classes = _table(exported, "class")
    for c in CLASS_NAMES:
        share = 100 * sum(f.get(c, 0) for f in fractions) / len(fractions)
        assert classes[c] == [f"{share:.2f} %", str(sum(f.get(c, 0) > 0 for f in fractions))]
    words = [len(c.split()) for c in df["caption"]]
    assert f"{min(words)} to {max(words)} words long" in card
    bbox = list(df["bbox"])
    assert f"west {min(b[0] for b in bbox):.4f}" in card
    assert f"north {max(b[3] for b in bbox):.4f}" in card
    assert f"from {min(df['datetime'])} to {max(df['datetime'])}" in card
    files = Counter(str(p.parent.relative_to(exported)) for p in exported.rglob("*") if p.is_file())
    files.pop(".", None)
    assert _table(exported, "directory") == {k: str(v) for k, v in files.items()}
    assert re.search(r"Config hash `[0-9a-f]{16}`", card)
    # The sources are named by the world they came from, not by this run's loopback ports.
    assert "| sentinel2 | world (preset demo, seed 0) | sentinel-2-l2a |" in card
    assert "127.0.0.1" not in card
    assert "ESA WorldCover" in card and "CC BY 4.0" in card and "Copernicus Sentinel" in card
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "cc-by-4.0"
    names = {d["split"] for d in front["configs"][0]["data_files"]}
    assert names == set(df["split"])


def test_export_to_an_fsspec_url(exported: Path, tmp_path: Path, dask_client: Client) -> None:
    run = exported.parent.parent
    out = tmp_path / "elsewhere"
    cfg = parse_config(
        {
            "output": str(run),
            "export": {
                "formats": ["chatearthnet", "parquet"],
                "batch": 4,
                "output": f"file://{out}",
            },
        }
    )
    s = run_export(cfg, dask_client)
    assert s.directory == str(out)  # a file:// URL is written as local files (by rename)
    mine = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    theirs = sorted(str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file())
    assert mine == theirs and len(mine) == s.files
    for rel in mine:
        if rel.endswith(".png") or rel.startswith("captions/"):
            assert (out / rel).read_bytes() == (exported / rel).read_bytes(), rel
