"""Reading a report page back: its references, sections, images and ``data-stat`` numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = frozenset(
    (
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    )
)


@dataclass
class Page:
    tags: list[str] = field(default_factory=list)
    refs: list[tuple[str, str, str]] = field(default_factory=list)  # tag, attribute, value
    sections: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    stats: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (value, text)
    styles: list[str] = field(default_factory=list)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Page()
        self._open: list[tuple[str, str, str] | None] = []  # every open element: (tag, stat, value)
        self._text: dict[int, list[str]] = {}  # depth of an open data-stat element -> its text
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags.append(tag)
        for k in ("src", "href", "srcset", "action", "data", "poster"):
            if k in a:
                self.page.refs.append((tag, k, a[k]))
        if "style" in a:
            self.page.styles.append(a["style"])
        if tag == "section":
            self.page.sections.append(a.get("id", ""))
        if tag == "img":
            self.page.images.append(a.get("src", ""))
        if tag == "style":
            self._in_style = True
        if tag in VOID:
            return
        if "data-stat" in a:
            self._text[len(self._open)] = []
            self._open.append((tag, a["data-stat"], a.get("data-value", "")))
        else:
            self._open.append(None)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        if tag in VOID:
            return
        top = self._open.pop()
        if top is not None:
            opened, stat, value = top
            assert opened == tag, f"<{opened} data-stat={stat}> closed by </{tag}>"
            text = "".join(self._text.pop(len(self._open))).strip()
            assert stat not in self.page.stats, f"data-stat {stat} twice"
            self.page.stats[stat] = (value, text)

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.page.styles.append(data)
        for t in self._text.values():
            t.append(data)


def parse(html: str) -> Page:
    p = _Parser()
    p.feed(html)
    p.close()
    return p.page
