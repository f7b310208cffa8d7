"""The notebooks run top to bottom, in a kernel, against one small run: 01 makes it (a corner of
the demo world, the `rules` captioner, on a LocalCluster the notebook starts) and 02-04 read it
through ``CEN_RUN_DIR``. Each test checks what its notebook shows against the run's own files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from cenlib.captions import read_captions
from cenlib.export import SPLITS, read_table
from cenlib.verify import read_verdicts

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = (
    "01_quick_start.ipynb",
    "02_one_patch.ipynb",
    "03_the_dataset.ipynb",
    "04_profiling.ipynb",
)
pytestmark = pytest.mark.e2e  # each notebook runs top to bottom in a kernel; 01 runs the job


def execute(name: str, cwd: Path, **env: str) -> NotebookNode:
    """Run ``notebooks/name`` in a fresh kernel started in ``cwd`` with ``env`` added; a cell
    that raises fails the test with its traceback (nbclient's CellExecutionError)."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute(env={**os.environ, **env})
    return nb


def outputs(nb: NotebookNode) -> list[NotebookNode]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text(nb: NotebookNode) -> str:
    """Everything the notebook printed or returned as text, whitespace collapsed."""
    parts = []
    for o in outputs(nb):
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        elif "text/plain" in o.get("data", {}):
            parts.append(o["data"]["text/plain"])
    return " ".join(" ".join(parts).split())


def images(nb: NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(nb))


@pytest.fixture(scope="module")
def quick_start(
    tmp_path_factory: pytest.TempPathFactory, demo_world: Path
) -> tuple[NotebookNode, Path]:
    """Notebook 01 executed once: the run it made is what 02-04 read."""
    cwd = tmp_path_factory.mktemp("notebooks")
    run = cwd / "run"
    nb = execute(
        "01_quick_start.ipynb", cwd, CEN_RUN_DIR=str(run), CEN_WORLD_CACHE=str(demo_world.parent)
    )
    return nb, run


def test_notebooks_are_stored_without_outputs() -> None:
    assert tuple(sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))) == EXPECTED
    for name in EXPECTED:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), name


def test_01_quick_start_runs_the_job_from_python(quick_start: tuple[NotebookNode, Path]) -> None:
    nb, run = quick_start
    said = text(nb)
    summary = json.loads((run / "summary.json").read_text())
    # The dashboard it links to is the cluster the job ran on.
    assert f"Dask dashboard: {summary['cluster']['dashboard']}" in said
    assert summary["cluster"]["workers"] == 2
    assert summary["stages"][-2:] == ["export", "report"] and summary["export"]["exported"] > 0
    assert (run / "report.html").is_file() and (run / "export" / "chatearthnet").is_dir()
    assert "kind: address" in said  # the config it printed points the job at that cluster
    assert images(nb) >= 1  # the contact sheet


def test_02_follows_one_patch(quick_start: tuple[NotebookNode, Path], tmp_path: Path) -> None:
    _, run = quick_start
    nb = execute("02_one_patch.ipynb", tmp_path, CEN_RUN_DIR=str(run))
    said = text(nb)
    found = re.search(r"patch: (\S+)", said)
    assert found, "the notebook names the patch it picked"
    patch = found.group(1)
    caption = next(c for c in read_captions(run) if c.patch_id == patch)
    assert " ".join(caption.caption.split()) in said  # it shows that patch's caption
    verdict = next(v for v in read_verdicts(run) if v.patch_id == patch)
    assert f"verdict: {verdict.status}" in said
    split = read_table(run).set_index("patch_id").loc[patch, "split"]
    assert f"exported to the {split} split" in said
    assert images(nb) >= 3  # RGB and land cover, the odc-stac read, the class shares


def test_03_shows_the_exported_dataset(
    quick_start: tuple[NotebookNode, Path], tmp_path: Path
) -> None:
    _, run = quick_start
    nb = execute("03_the_dataset.ipynb", tmp_path, CEN_RUN_DIR=str(run))
    said = text(nb)
    found = re.search(r"split counts: (\{[^}]*\})", said)
    assert found, "the notebook prints its split counts"
    table = read_table(run)
    assert json.loads(found.group(1)) == {s: int((table["split"] == s).sum()) for s in SPLITS}
    summary = json.loads((run / "summary.json").read_text())
    n = summary["report"]["figures"]
    assert f"{n} figures in" in said
    # The report's figures, then at least one browsing figure per dominant class.
    assert images(nb) > n
    for _, row in table.head(3).iterrows():
        assert row["patch_id"] in said


def test_04_profiles_the_run(quick_start: tuple[NotebookNode, Path], tmp_path: Path) -> None:
    _, run = quick_start
    nb = execute("04_profiling.ipynb", tmp_path, CEN_RUN_DIR=str(run))
    said = text(nb)
    summary = json.loads((run / "summary.json").read_text())
    stages = [s for s in summary["stages"] if s in summary["wall"]]
    assert f"stages: {', '.join(stages)}" in said
    assert images(nb) >= 1  # the per-stage bars
    if "profile" in summary:  # the stages' spans and performance reports
        assert "no 'profile'" not in said and "peak worker memory (MiB)" in said
        assert images(nb) >= 3  # and the worker seconds by activity and by task prefix
        reports = sorted((run / "profile").glob("*.html"))
        assert {r.stem for r in reports} == set(summary["profile"])
        assert all(f"{r.name} " in said for r in reports)  # each report listed
    else:  # a run of a cenlib before per-stage profiling: the job's clock only
        assert "no 'profile'" in said
