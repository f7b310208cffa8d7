"""Stage *report*: one self-contained HTML page with the statistics a dataset paper shows.

Entry: :func:`run_report` ``(run_dir, output=None)`` -> :class:`ReportSummary`: reads what the
earlier stages wrote (the export's table, the verdicts, the review decisions, ``summary.json``)
and writes ``<run>/report.html`` (:data:`REPORT`): a map of the exported samples over Natural
Earth coastlines with a zoomed panel over their extent, the land-cover distribution per split,
caption lengths and vocabulary, class mentions against presence, verification pass rates by
violation type, review outcomes and time and cost per stage. Figures are PNGs inside the page
(base64); nothing is fetched when it is opened. :func:`screenshot` renders a page in headless
Chromium (playwright, a dev dependency) and saves a full-page PNG. Reader:
:func:`read_figures` ``(run_dir or page)`` -> the page's figures as PNG bytes (:class:`Figure`).

Modules: :mod:`.inputs` (what the page is made from), :mod:`.stats` and :mod:`.text` (the
numbers, pure functions of those inputs), :mod:`.basemap` (Natural Earth layers),
:mod:`.maps` and :mod:`.figures` (matplotlib, Agg), :mod:`.page` (the HTML), :mod:`.stage`
(the entry), :mod:`.browser` (the screenshot), :mod:`.read` (the reader).

Names load on first use (PEP 562): the job imports this package, and matplotlib, pandas and
the Natural Earth reader load only when a report is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cenlib.lazy import lazy_exports

if TYPE_CHECKING:
    from cenlib.report.browser import PageCheck, ScreenshotError, screenshot
    from cenlib.report.read import Figure, read_figures
    from cenlib.report.stage import REPORT, ReportError, ReportSummary, run_report

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("REPORT", "ReportError", "ReportSummary", "run_report"), "cenlib.report.stage"
    ),
    **dict.fromkeys(("PageCheck", "ScreenshotError", "screenshot"), "cenlib.report.browser"),
    **dict.fromkeys(("Figure", "read_figures"), "cenlib.report.read"),
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

__all__ = [
    "REPORT",
    "Figure",
    "PageCheck",
    "ReportError",
    "ReportSummary",
    "ScreenshotError",
    "read_figures",
    "run_report",
    "screenshot",
]
