"""The words captions use for each land-cover class, and where a caption mentions a class.

:data:`LEXICON` is the documented list: per ChatEarthNet class, the words LLMs write for it
(singular forms; plurals and hyphenated/spaced variants are generated). :func:`find_mentions`
finds every mention in one pass of an Aho-Corasick automaton (``pyahocorasick``) over the
normalised text (lower case, hyphens as spaces: the same length as the text, so spans index the
original), keeps whole words only, prefers the longest phrase where phrases overlap ("mangrove
forest" is mangroves, not tree; "herbaceous wetland" is wetland) and marks the mentions that a
negation governs ("no water", "without trees", "absence of buildings", "water is absent",
"ice-free").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

import ahocorasick

from cenlib.classes import CLASS_NAMES

# Singular forms (plurals are generated). Generic words that name no single class ("vegetation",
# "green areas", "land", "park") are left out on purpose: they can be neither right nor wrong.
LEXICON: Mapping[int, tuple[str, ...]] = {
    1: (
        "water", "water body", "open water", "lake", "river", "riverbed", "stream", "creek",
        "brook", "sea", "ocean", "seawater", "reservoir", "pond", "canal", "lagoon", "estuary",
        "bay", "waterway", "inlet", "fjord", "watercourse", "basin of water", "coastal water",
        "aquatic area", "tributary", "oxbow",
    ),
    2: (
        "developed area", "developed land", "development", "developed", "urban", "urbanised",
        "urbanized", "urban area", "urban fabric", "built up", "built up area",
        "built environment", "building", "house", "housing", "home", "settlement", "town",
        "township", "city", "village", "hamlet", "road", "street", "highway", "motorway",
        "residential", "industrial", "infrastructure", "suburb", "suburban", "downtown",
        "built structure", "man made structure", "structure", "neighbourhood", "neighborhood",
        "rooftop", "parking lot", "car park", "urbanisation", "urbanization", "impervious surface",
        "artificial surface", "human settlement", "commercial area", "paved area",
    ),
    3: (
        "tree", "tree cover", "tree canopy", "forest", "forested", "forestland", "rainforest",
        "woodland", "wood", "woods", "wooded", "treed", "tree covered", "timber", "copse",
        "grove", "canopy", "treeline", "tree line", "conifer", "coniferous", "deciduous",
        "orchard", "tree stand",
    ),
    4: (
        "shrub", "shrubland", "shrubbery", "scrub", "scrubland", "bush", "bushland", "brush",
        "brushland", "thicket", "heath", "heathland", "chaparral", "maquis", "undergrowth",
        "shrubby", "bushy",
    ),
    5: (
        "grass", "grassland", "grassy", "meadow", "pasture", "pastureland", "lawn", "prairie",
        "savanna", "savannah", "steppe", "rangeland", "grazing land", "herbaceous cover",
        "grass cover", "turf",
    ),
    6: (
        "crop", "cropland", "farmland", "field", "agricultural", "agriculture",
        "agricultural land", "cultivated", "cultivation", "cultivated land", "farm", "farming",
        "arable", "arable land", "paddy", "rice paddy", "plantation", "tilled", "plowed",
        "ploughed", "cereal", "vineyard", "crop field",
    ),
    7: (
        "bare land", "bare ground", "bare soil", "bare earth", "bare rock", "bare", "barren",
        "barren land", "soil", "rock", "rocky", "rock outcrop", "sand", "sandy", "sandbank",
        "sandbar", "dune", "desert", "gravel", "stony", "exposed ground", "exposed soil",
        "exposed earth", "exposed rock", "sparse vegetation", "sparsely vegetated", "scree",
        "badland", "wasteland", "dirt",
    ),
    8: (
        "snow", "snowfield", "snowpack", "snow covered", "snowy", "ice", "icy", "ice sheet",
        "ice cap", "glacier", "glacial", "firn", "frozen", "permafrost snow", "sea ice",
    ),
    9: (
        "wetland", "marsh", "marshland", "swamp", "swampland", "bog", "fen", "peatland",
        "mire", "reed", "reedbed", "herbaceous wetland", "wet meadow", "floodplain marsh",
        "salt marsh", "marshy", "boggy", "swampy",
    ),
    10: ("mangrove", "mangroves", "mangrove forest", "mangrove swamp", "mangrove stand"),
    11: ("moss", "lichen", "moss and lichen", "mosses", "tundra", "mossy"),
}  # fmt: skip

# A negation governs the class mentions that follow it in its clause, as long as only a few words
# stand between ("no visible signs of water") and a list goes on with glue words only ("no water,
# wetland or snow").
NEGATION_CUES: tuple[str, ...] = (
    "no", "not", "without", "absence of", "absent", "lack of", "lacks", "lacking", "free of",
    "devoid of", "none", "neither", "nor", "never", "no sign of", "no signs of", "little to no",
    "little or no", "hardly any", "barely any", "scarcely any", "almost no", "virtually no",
    "nearly no", "few if any", "not any", "isn't", "aren't", "is not", "are not", "does not",
    "do not", "doesn't", "don't", "cannot", "rather than", "instead of", "missing", "nowhere",
)  # fmt: skip
# "not only trees but also ...", "no small amount of water": cues that negate nothing.
NOT_A_CUE = re.compile(
    r"\s+(?:only|just|merely|simply|far|less|more|doubt|small|little|minor|shortage|longer)\b"
)
# A negated list goes on past "and" only if the next mention ends the list ("no roads, houses
# and fields." / "... fields are visible"), not when it starts a new statement ("no roads, and
# forest covers the rest").
LIST_END = frozenset(
    (
        ",", ".", ";", ":", "or", "nor", "and", "in", "on", "at", "are", "is", "were", "was", "be",
        "can", "could", "anywhere", "visible", "present", "here", "there", "within", "across",
        "throughout", "to", "either", "whatsoever", "at", "all"
    )
)  # fmt: skip
# After a mention: "water is absent", "trees are not present", "ice-free".
POST_NEGATION = re.compile(
    r"\W{0,3}(?:(?:is|are|was|were)\s+(?:entirely\s+|completely\s+|totally\s+)?"
    r"(?:absent|missing|not\s+(?:present|visible|seen|found|there)|nowhere)|free\b|"
    r"(?:is|are)\s+(?:nowhere\s+to\s+be\s+(?:seen|found)))"
)
CLAUSE_BREAK = re.compile(
    r"[.;:!?()\[\]]|\b(?:but|while|whereas|although|though|however|yet|except|instead|"
    r"meanwhile|which|where|whose|with|alongside|and\s+(?:the|a|an|some|there|it|its))\b"
)
GLUE = frozenset(
    (
        "and", "or", "nor", ",", "any", "other", "the", "a", "an", "of", "visible", "notable",
        "significant", "obvious", "major", "large", "small", "discernible", "apparent",
        "noticeable", "clear", "areas", "area", "cover", "covered", "land", "bodies", "body",
        "features", "signs", "sign", "traces", "trace", "evidence", "patches", "patch", "presence",
        "either", "kind", "type", "types"
    )
)  # fmt: skip
MAX_GAP_WORDS = 5  # words between a negation cue and the first mention it governs

WORD = re.compile(r"[a-z0-9']+|,")


@dataclass(frozen=True)
class Mention:
    """One mention of a class in a caption: ``text[start:end] == words``."""

    cls: int
    name: str
    start: int
    end: int
    words: str
    negated: bool


_NO_PLURAL = frozenset(("cover", "canopy", "land", "built", "up", "vegetation", "vegetated"))


def _variants(term: str) -> set[str]:
    """The term and its plural (regular English forms are enough: "cities", "bushes")."""
    out = {term}
    head, _, last = term.rpartition(" ")
    if last in _NO_PLURAL:  # "grass covers the image" is a verb, not "grass cover" twice
        return out
    pre = f"{head} " if head else ""
    if last.endswith(("s", "x", "sh", "ch")):
        out.add(f"{pre}{last}es")
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "o", "u"):
        out.add(f"{pre}{last[:-1]}ies")
    else:
        out.add(f"{pre}{last}s")
    return out


def normalise(text: str) -> str:
    """Lower case, hyphens and slashes as spaces, same length as ``text`` (spans carry over)."""
    low = text.lower()
    if len(low) != len(text):  # a few characters change length when lowered ("İ")
        low = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return low.translate(_SEPARATORS)


_SEPARATORS = str.maketrans({"-": " ", "\u2010": " ", "\u2013": " ", "/": " ", "_": " "})


@cache
def automaton() -> ahocorasick.Automaton:
    """The class-term automaton: value ``(class, term length)`` per normalised term."""
    a = ahocorasick.Automaton()
    for cls, terms in LEXICON.items():
        for term in terms:
            for v in _variants(normalise(term)):
                a.add_word(v, (cls, len(v)))
    a.make_automaton()
    return a


@cache
def _cue_automaton() -> ahocorasick.Automaton:
    a = ahocorasick.Automaton()
    for cue in NEGATION_CUES:
        a.add_word(normalise(cue), len(cue))
    a.make_automaton()
    return a


def _is_word_char(c: str) -> bool:
    return c.isalnum()


def _whole_words(
    low: str, hits: Iterable[tuple[int, tuple[int, int]]]
) -> list[tuple[int, int, int]]:
    """(start, end, class) of the hits that are whole words, longest first where they overlap."""
    n = len(low)
    found = []
    for end_idx, (cls, length) in hits:
        start, end = end_idx - length + 1, end_idx + 1
        if start > 0 and _is_word_char(low[start - 1]):
            continue
        if end < n and _is_word_char(low[end]):
            continue
        found.append((start, end, cls))
    if len(found) < 2:
        return found
    found.sort(key=lambda h: (h[0], -(h[1] - h[0])))
    kept: list[tuple[int, int, int]] = []
    for h in found:
        if kept and h[0] < kept[-1][1]:
            if h[1] - h[0] > kept[-1][1] - kept[-1][0]:
                kept[-1] = h
            continue
        kept.append(h)
    return kept


def negation_cues(low: str) -> list[tuple[int, int]]:
    """(start, end) of every whole-word negation cue of normalised text ``low``."""
    n = len(low)
    out = []
    for end_idx, length in _cue_automaton().iter(low):
        start, end = end_idx - length + 1, end_idx + 1
        if (
            (start == 0 or not _is_word_char(low[start - 1]))
            and (end >= n or not _is_word_char(low[end]))
            and not NOT_A_CUE.match(low, end)
        ):
            out.append((start, end))
    return out


def _continues_list(low: str, gap: str, end: int) -> bool:
    """Whether a mention after ``gap`` (ending at ``end``) continues a negated list."""
    words = WORD.findall(gap)
    if not all(w in GLUE for w in words):
        return False
    if "and" not in words:
        return True
    after = WORD.search(low, end)
    return after is None or after.group() in LIST_END or low[end : after.start()].strip() != ""


def _negated(
    low: str, spans: list[tuple[int, int, int]], cues: list[tuple[int, int]]
) -> list[bool]:
    """Per mention, whether a negation governs it (see the module doc)."""
    neg = [False] * len(spans)
    for i, (start, end, _) in enumerate(spans):
        if POST_NEGATION.match(low, end):
            neg[i] = True
            continue
        # The nearest cue before the mention, in the same clause, few words away; or the previous
        # mention negated and only glue words in between (a negated list).
        prev_end = spans[i - 1][1] if i else 0
        if i and neg[i - 1] and _continues_list(low, low[prev_end:start], end):
            neg[i] = True
            continue
        for c0, c1 in reversed(cues):
            if c1 > start:
                continue
            gap = low[c1:start]
            if c0 < prev_end:
                break  # an earlier mention stands between the cue and this one
            if CLAUSE_BREAK.search(gap) or len(WORD.findall(gap)) > MAX_GAP_WORDS:
                break
            neg[i] = True
            break
    return neg


def find_mentions(text: str) -> list[Mention]:
    """Every class mention of ``text``, in order, with its span and whether it is negated."""
    low = normalise(text)
    spans = _whole_words(low, automaton().iter(low))
    if not spans:
        return []
    neg = _negated(low, spans, negation_cues(low))
    return [
        Mention(cls, CLASS_NAMES[cls], s, e, text[s:e], n)
        for (s, e, cls), n in zip(spans, neg, strict=True)
    ]
