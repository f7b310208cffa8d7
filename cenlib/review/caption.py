"""A caption cut into segments for display: class mentions and violations, by character span.

The page draws each segment as a text node (never markup), coloured by its class and marked by
the violations that cover it. Spans are Python string indices; cutting here, not in the
browser, keeps them right for any text (JavaScript counts UTF-16 units instead).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

from cenlib.classes import CLASS_NAMES, by_name


class MentionLike(Protocol):
    """What :func:`segments` needs of a ``cenlib.verify.Mention``."""

    @property
    def cls(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def negated(self) -> bool: ...


def class_index(value: Any) -> int | None:
    """A violation's ``class`` as a class index: given as an index or as a class name."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and 0 <= value < len(CLASS_NAMES):
        return value
    try:
        return by_name(str(value)).index
    except KeyError:
        return None


def violation_span(v: dict[str, Any], n: int) -> tuple[int, int] | None:
    """The ``[start, end]`` of a violation, clipped to a text of length ``n``; None if it has
    none (a violation about the whole text) or an empty one."""
    span = v.get("span")
    if not isinstance(span, list | tuple) or len(span) != 2:
        return None
    try:
        start, end = max(0, int(span[0])), min(n, int(span[1]))
    except (TypeError, ValueError):
        return None
    return (start, end) if start < end else None


def segments(
    text: str, mentions: Sequence[MentionLike], violations: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """``text`` as consecutive segments ``{"text", "cls", "negated", "violations"}``.

    ``cls`` is the class index of the mention the segment is part of (None outside mentions),
    ``violations`` the indices (into ``violations``) of the violations whose span covers it.
    Joined, the segments' texts give back ``text``.
    """
    n = len(text)
    marks = [(m.start, m.end) for m in mentions if 0 <= m.start < m.end <= n]
    spans = [violation_span(v, n) for v in violations]
    cuts = {0, n}
    for s in [*marks, *(s for s in spans if s)]:
        cuts.update(s)
    bounds = sorted(cuts)
    out: list[dict[str, Any]] = []
    for a, b in itertools.pairwise(bounds):
        m = next((m for m in mentions if m.start <= a and b <= m.end), None)
        seg = {
            "text": text[a:b],
            "cls": None if m is None else int(m.cls),
            "negated": bool(m and m.negated),
            "violations": [i for i, s in enumerate(spans) if s and s[0] <= a and b <= s[1]],
        }
        prev = out[-1] if out else None
        if prev and all(prev[k] == seg[k] for k in ("cls", "negated", "violations")):
            prev["text"] += seg["text"]  # same marks: one segment
        else:
            out.append(seg)
    return out
