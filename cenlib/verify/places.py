"""Where a caption puts things: position phrases, and the pixels of each place on a patch.

A *place* is a part of the patch a caption can name: a quadrant ("north-east", "upper right
corner"), a half ("the south", "left side"), the middle ("centre", "central part"), a band along
one edge ("along the bottom edge", "northern border"), the edges all round ("periphery"), or
the whole image ("throughout", "the entire scene": a statement about all of it, which competes
with the other places for the class mentions near it).
:func:`find_places` finds the phrases in normalised text (see :func:`lexicon.normalise`);
:func:`place_counts` sums the analysis's region counts into the pixels per class of every place.
Corners count as their quadrant: "the top left corner" is read as the top-left quarter, a
lenient reading that keeps loose but true sentences from being flagged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cenlib.analysis import REGIONS
from cenlib.verify.scan import Anchored

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
HALVES = ("top", "bottom", "left", "right")
EDGE_BANDS = ("top edge", "bottom edge", "left edge", "right edge")
PLACES: tuple[str, ...] = (*QUADRANTS, *HALVES, "middle", *EDGE_BANDS, "edges", "whole")

_V = {"north": "top", "upper": "top", "top": "top", "south": "bottom", "lower": "bottom"}
_V |= {"bottom": "bottom", "northern": "top", "southern": "bottom"}
_H = {"east": "right", "west": "left", "right": "right", "left": "left"}
_H |= {"eastern": "right", "western": "left"}

_NOUN = (
    r"(?:half|side|part|parts|portion|portions|section|sections|area|areas|region|regions|"
    r"corner|corners|quadrant|quadrants|third|strip|band|hand|zone|sector|end|reaches|fringe|"
    r"expanse|stretch|segment|quarter|extent|piece|territory)"
)
_EDGE = r"(?:edge|edges|border|borders|margin|margins|boundary|rim|fringe|fringes|periphery)"
_COMPASS = r"(?:north|south|east|west|northern|southern|eastern|western)"
_IMAGE_V = r"(?:top|upper|bottom|lower)"
_IMAGE_H = r"(?:left|right)"

# Order matters: the alternatives are tried left to right at each position.
_PATTERN = re.compile(
    rf"""
    (?P<diag>\b(?P<dv>north|south)\s?(?P<dh>east|west)(?:ern)?\b
      |\b(?P<iv>{_IMAGE_V})\s(?:(?:most|hand)\s)?(?P<ih>{_IMAGE_H})\b(?:\s(?:hand\s)?{_NOUN})?
      |\b(?P<ih2>{_IMAGE_H})\s(?P<iv2>{_IMAGE_V})\b)
    |(?P<away>\baway\sfrom\s(?:the\s|its\s|all\s)?(?:(?:top|bottom|left|right|north|south|east|west)
      (?:\s(?:and|or)\s(?:top|bottom|left|right|north|south|east|west))?\s)?{_EDGE})
    |(?P<relative>\b(?:further|farther|more|slightly)\s(?:to\s(?:the\s)?)?{_COMPASS}\b)
    |(?P<orient>\b{_COMPASS}\s(?:to\s)?{_COMPASS}\b|\b(?:top|upper)\s(?:to\s)?(?:bottom|lower)\b
      |\bleft\s(?:to\s)?right\b)
    |(?P<edge>\b(?:the\s)?(?P<ev>{_COMPASS}|{_IMAGE_V}|{_IMAGE_H})(?:most)?\s{_EDGE}\b
      |\balong\s(?:the\s)?(?P<ev2>{_COMPASS}|{_IMAGE_V}|{_IMAGE_H})\b(?!\s{_NOUN}))
    |(?P<all_edges>\b(?:the\s)?(?:edges|borders|margins|periphery|perimeter|outskirts)\b
      |\b(?:image|patch|scene)(?:'s)?\s{_EDGE}\b|\b{_EDGE}\sof\s(?:the\s)?(?:image|patch|scene)\b)
    |(?P<whole>\b(?:the\s)?(?:whole|entire)\s(?:image|scene|patch|area|tile|landscape)\b
      |(?<!of\s)\bthe\s(?:image|scene|patch)\b(?!'s|\s(?:is|shows|depicts|displays|presents|features|captures|reveals|contains|offers|has))
      |\b(?:throughout|everywhere|overall|all\sover)\b)
    |(?P<mid>\b(?:centre|center|centred|centered|central|middle|midst|heart\sof\sthe\s
        (?:image|scene|patch))\b)
    |(?P<half>\b(?P<cv>{_COMPASS})\b(?!\s(?:to|and)\s{_COMPASS})
      |\b(?P<hv>{_IMAGE_V}|{_IMAGE_H})(?:most)?\s{_NOUN}\b
      |\b(?:the|its)\s(?P<hv2>{_IMAGE_V}|{_IMAGE_H})\b(?!\s(?:of\s(?:a|an)\b|{_IMAGE_H}))
      |\b(?:on|to|at|towards)\s(?:the\s)?(?P<hv3>left|right|top|bottom)\b)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Place:
    """A position phrase of a caption: ``text[start:end]`` names ``place`` (one of PLACES)."""

    place: str
    start: int
    end: int


def _side(word: str) -> str:
    return _V.get(word) or _H[word]


# Every phrase holds one of these words. The regular expression runs only around them: found in
# one Aho-Corasick pass, they leave most of a caption unscanned.
_ANCHORS = (
    "north", "south", "east", "west", "top", "upper", "bottom", "lower", "left", "right",
    "cent", "middle", "midst", "heart", "edge", "border", "margin", "periph", "perimeter",
    "outskirts", "whole", "entire", "throughout", "everywhere", "overall", "all over", "image",
    "scene", "patch", "rim", "fringe", "boundar", "further", "farther", "more", "slightly",
    "away",
)  # fmt: skip
_WORDS_BACK = 2  # "towards the" before an anchor word ("away" is one itself)


@functools.cache
def _scanner() -> Anchored:
    return Anchored(_PATTERN, _ANCHORS, _WORDS_BACK)


def find_places(low: str, words: Sequence[int] | None = None) -> list[Place]:
    """Every position phrase of normalised text ``low``, in order (orientations such as
    "north-south" or "from left to right" name no place and are skipped). ``words``: the start
    offsets of its words, when the caller has them."""
    out: list[Place] = []
    for m in _scanner().finditer(low, words):
        g = m.groupdict()
        if g["orient"] or g["away"] or g["relative"]:
            continue
        if g["diag"]:
            if g["dv"]:
                place = f"{_V[g['dv']]} {_H[g['dh']]}"
            elif g["iv"]:
                place = f"{_V[g['iv']]} {_H[g['ih']]}"
            else:
                place = f"{_V[g['iv2']]} {_H[g['ih2']]}"
        elif g["edge"]:
            place = f"{_side(g['ev'] or g['ev2'])} edge"
        elif g["all_edges"]:
            place = "edges"
        elif g["whole"]:
            place = "whole"
        elif g["mid"]:
            place = "middle"
        else:
            word = g["cv"] or g["hv"] or g["hv2"] or g["hv3"]
            place = _side(word)
        out.append(Place(place, m.start(), m.end()))
    return out


_R = {name: i for i, name in enumerate(REGIONS)}


def _place_matrix() -> npt.NDArray[np.int64]:
    """(PLACES, REGIONS): each place as a sum (and difference) of the analysis's regions."""
    of = {
        **{q: (q,) for q in QUADRANTS},
        "top": ("top left", "top right"),
        "bottom": ("bottom left", "bottom right"),
        "left": ("top left", "bottom left"),
        "right": ("top right", "bottom right"),
        "middle": ("middle",),
        "top edge": ("top left corner", "top", "top right corner"),
        "bottom edge": ("bottom left corner", "bottom", "bottom right corner"),
        "left edge": ("top left corner", "left", "bottom left corner"),
        "right edge": ("top right corner", "right", "bottom right corner"),
        "edges": ("whole",),
        "whole": ("whole",),
    }
    m = np.zeros((len(PLACES), len(REGIONS)), np.int64)
    for i, p in enumerate(PLACES):
        for r in of[p]:
            m[i, _R[r]] += 1
    m[PLACES.index("edges"), _R["middle"]] -= 1  # all round the middle: the whole but it
    return m


_MATRIX = _place_matrix()


def place_counts(region_counts: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """``(..., len(PLACES), classes)`` pixels per place from the analysis's ``(..., regions,
    classes)`` region counts (``cenlib.analysis.REGIONS`` order)."""
    out: npt.NDArray[np.int64] = _MATRIX @ np.asarray(region_counts, dtype=np.int64)
    return out
