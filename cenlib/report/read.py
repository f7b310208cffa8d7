"""Reading a report back: its figures, as PNG bytes with the section and title they show.

The page is the only place the figures are kept (inside it, base64), so notebooks and papers
take them from there: :func:`read_figures` ``(path)``, ``path`` a run directory or a page.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from cenlib.report.inputs import ReportError

REPORT = "report.html"
_PNG = "data:image/png;base64,"


@dataclass(frozen=True)
class Figure:
    section: str  # the id of the page section it is in ("map", "land-cover", ...)
    title: str  # what it shows (the image's alt text)
    png: bytes


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.found: list[Figure] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.section = a.get("id", "")
        elif tag == "img" and a.get("src", "").startswith(_PNG):
            png = base64.b64decode(a["src"][len(_PNG) :])
            self.found.append(Figure(self.section, a.get("alt", ""), png))


def read_figures(path: Path) -> list[Figure]:
    """The figures of the report at ``path`` (a run directory, for its ``report.html``, or a
    page written by ``cen report --output``), in page order."""
    page = Path(path) / REPORT if Path(path).is_dir() else Path(path)
    if not page.is_file():
        raise ReportError(f"no report at {page}; make it with `cen report {page.parent}`")
    parser = _Figures()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return parser.found
