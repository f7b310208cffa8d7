"""The report in a real headless browser (Debian's chromium driven by playwright): every image
decodes, nothing is requested from outside the file, and a full-page screenshot is taken."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from cenlib.report import run_report, screenshot

pytestmark = pytest.mark.e2e
SHOT = Path("/tmp/report.png")  # the latest screenshot, for a human to look at


def test_the_page_renders_with_every_image(report_run: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("no chromium on PATH; run `make chromium` (installs Debian's chromium)")
    summary = run_report(report_run, tmp_path / "report.html")
    png = tmp_path / "report.png"
    check = screenshot(Path(summary.path), png)
    assert len(check.images) == summary.figures
    assert all(w > 0 for w in check.images), check.images
    assert check.blocked == []
    assert check.width <= 1200  # no horizontal scrolling at the default width
    with Image.open(png) as im:
        assert im.width == 1200 and im.height == check.height > 3000
    shutil.copyfile(png, SHOT)
