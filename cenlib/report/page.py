"""The report page: one HTML file, its style sheet inline, its figures as PNG data URLs; no
script, no font, no link to anything outside the file.

Each number a reader may want to check carries ``data-stat`` (a stable name) and ``data-value``
(the exact value; the text shows it rounded), so that tests and scripts read the page without
parsing prose.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cenlib.classes import CLASSES

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2329;
       margin: 0; background: #f6f7f9; }
main { max-width: 1140px; margin: 0 auto; padding: 16px 24px 40px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 2px; }
h2 { font-size: 17px; margin: 28px 0 6px; padding-top: 8px; border-top: 1px solid #e3e6ea; }
p.lead, p.note { color: #57606a; margin: 4px 0 10px; }
p.note { font-size: 12px; }
nav { font-size: 13px; margin: 8px 0 4px; }
nav a { margin-right: 12px; color: #0b5cad; text-decoration: none; }
img { display: block; max-width: 100%; height: auto; margin: 6px 0; }
table { border-collapse: collapse; font-size: 12.5px; margin: 8px 0; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e6e8eb; text-align: left; }
th { background: #f0f2f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.swatch { display: inline-block; width: 11px; height: 11px; margin-right: 6px;
          border: 1px solid #555; vertical-align: -1px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid #e3e6ea; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 20px; }
.card span { color: #57606a; font-size: 12px; }
.row { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.words { columns: 4; font-size: 12.5px; margin: 4px 0; padding-left: 18px; }
"""


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, and (for numbers) the stat name and exact value behind it."""

    text: str
    stat: str = ""
    value: object = None
    swatch: str = ""  # hex colour of a class swatch before the text
    numeric: bool = False  # right-aligned

    def render(self, tag: str = "td") -> str:
        attrs = ' class="num"' if self.numeric and tag == "td" else ""
        if self.stat:
            attrs += f' data-stat="{html.escape(self.stat)}" data-value="{self.value}"'
        sw = (
            f'<span class="swatch" style="background:#{self.swatch}"></span>' if self.swatch else ""
        )
        return f"<{tag}{attrs}>{sw}{html.escape(self.text)}</{tag}>"


def num(value: float | int, stat: str = "", digits: int = 0) -> Cell:
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.{digits}f}"
    return Cell(text, stat, value, numeric=True)


def pct(value: float, stat: str = "", digits: int = 1) -> Cell:
    return Cell(f"{value * 100:.{digits}f}%", stat, value, numeric=True)


def class_cell(index: int) -> Cell:
    return Cell(CLASSES[index].name, swatch=CLASSES[index].color)


def table(header: Sequence[str] | None, rows: Iterable[Sequence[object]], id_: str = "") -> str:
    head = "".join(Cell(h).render("th") for h in header or ())
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = "".join(
        "<tr>" + "".join((c if isinstance(c, Cell) else Cell(str(c))).render() for c in r) + "</tr>"
        for r in rows
    )
    ident = f' id="{html.escape(id_)}"' if id_ else ""
    return f"<table{ident}>{thead}<tbody>{body}</tbody></table>"


def card(value: Cell, label: str) -> str:
    return f'<div class="card">{value.render("b")}<span>{html.escape(label)}</span></div>'


def figure(data_url: str, alt: str, width: int | None = None) -> str:
    style = f' style="width:{width}px"' if width else ""
    return f'<img src="{data_url}" alt="{html.escape(alt)}"{style}>'


def para(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>'


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: str  # HTML


def document(title: str, lead: str, sections: Sequence[Section], footer: str) -> str:
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = "".join(
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{para(lead, 'lead')}<nav>{nav}</nav>"
        f"{parts}<footer>{para(footer)}</footer></main></body></html>\n"
    )
