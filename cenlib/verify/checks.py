"""Check one caption against the land cover of its patch: the pure kernel of the verify stage.

:func:`check` takes the caption, the patch's region counts (the analysis's ``(regions,
classes)`` pixels) and the style's :class:`Rules`, and returns the typed violations:

- ``hallucinated``: a class mentioned (not negated) with fewer than ``min_pixels`` in the patch;
- ``omitted``: the largest class, or any over ``dominant_share``, never mentioned;
- ``misplaced``: a class put in a place (see :mod:`.places`) holding fewer than ``min_pixels``
  of it; each mention is placed by the nearest position phrase of its clause;
- ``amount``: dominance words for a class under ``dominance_share`` of its scope (the place its
  mention is put in, else the image), or small-amount words for one over ``small_share``;
- ``banned``: the style's banned words and hedges, and percentages where the style has none;
- ``length``, ``truncated`` (no closing punctuation, or the answer stopped at ``max_tokens``),
  ``language`` (not English).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from ahocorasick import Automaton

from cenlib.classes import CLASS_NAMES
from cenlib.verify.lexicon import WORD, Mention, find_mentions, normalise
from cenlib.verify.places import PLACES, Place, find_places, place_counts
from cenlib.verify.scan import Anchored

TYPES: tuple[str, ...] = (
    "hallucinated",
    "omitted",
    "misplaced",
    "amount",
    "banned",
    "length",
    "truncated",
    "language",
)
# How much each type takes off the score (1 = clean); a caption with any violation fails.
PENALTY = {
    "hallucinated": 0.4,
    "omitted": 0.4,
    "misplaced": 0.25,
    "amount": 0.2,
    "banned": 0.15,
    "length": 0.15,
    "truncated": 0.3,
    "language": 1.0,
    "unverifiable": 1.0,  # the patch has no statistics to check against
}
HEDGES: tuple[str, ...] = (
    "probably", "possibly", "perhaps", "maybe", "might", "it seems", "seems", "seem",
    "seemingly", "apparently", "presumably", "supposedly", "may be", "could be", "likely",
    "unlikely", "conceivably", "it is possible", "plausibly",
)  # fmt: skip


@dataclass(frozen=True)
class Rules:
    """What a style allows in a caption (see :func:`cenlib.verify.stage.rules_for`)."""

    banned: tuple[str, ...] = ()
    numbers: bool = False  # whether percentages may appear
    min_words: int = 25
    max_words: int = 400
    min_pixels: int = 20
    dominant_share: float = 0.3
    dominance_share: float = 0.3
    small_share: float = 0.6
    hedges: tuple[str, ...] = field(default=HEDGES)


Violation = dict[str, Any]
_PLACE = {p: i for i, p in enumerate(PLACES)}
_CLAUSE = re.compile(r"[.;!?]|\b(?:while|whilst|whereas|but|although|though|however|meanwhile)\b")
_TOUCH = re.compile(r"\b(?:touch|touches|touching|reach|reaches|reaching)\s(?:the\s|its\s)?$")
_LIST_GLUE = frozenset(("and", ",", "or", "the", "some", "other"))
_EXCEPT = re.compile(
    r"\b(?:apart\sfrom|aside\sfrom|except(?:\sfor)?|besides|other\sthan)\s(?:\w+\s){0,2}$"
)
_GLUE = frozenset(
    [
        "and",
        "or",
        ",",
        "the",
        "as",
        "well",
        "parts",
        "part",
        "sections",
        "areas",
        "regions",
        "of",
        "image",
    ]
)

_AMOUNT_NOUN = (
    r"(?:portion|portions|part|parts|share|fraction|proportion|amount|quantity|percentage|"
    r"majority|bulk|expanse)"
)
_DOM_F = re.compile(
    r"\b(?:dominated|characterised|characterized|covered|occupied)\s(?:mostly\s|mainly\s|"
    r"largely\s|primarily\s)?by\b|\b(?:predominantly|predominately|mostly|largely|mainly|"
    r"primarily|chiefly|overwhelmingly|almost\sentirely|almost\sexclusively|nearly\sentirely|"
    r"entirely)\b(?!\s(?:in|on|along|at|to|around|near|across|within|towards|toward|from|"
    r"through|throughout|concentrated|found|located|situated|confined|restricted|limited)\b)"
    r"|\b(?:the\s)?(?:majority|bulk|most)\sof\b"
    rf"|\b(?:large|major|great|vast|very\slarge|extra\slarge|extremely\slarge|huge|"
    rf"dominant|overwhelming|predominant|lion's)\s{_AMOUNT_NOUN}\b"
)
_DOM_B = re.compile(
    r"\b(?:dominates|dominate|dominating|predominates|predominate|prevails|prevail)\b"
    r"|\b(?:covers|cover|covering|occupies|occupy|occupying|takes\sup|take\sup|makes\sup|"
    r"make\sup|accounts\sfor|account\sfor|fills|fill|blankets|blanket)\s(?:most|the\smajority|"
    r"the\sbulk|nearly\sall|almost\sall)\b"
    # "main", "primary": the largest class, which may be well under a third
    r"|\b(?:is|are)\s(?:the\s)?(?:dominant|predominant|prevalent|prevailing)\b"
    r"|\b(?:the\s)?(?:dominant|predominant|prevailing)\s(?:land\s"
    r"cover|land\suse|class|cover|feature|element|type|surface|theme|landscape)\b"
)
_SMALL = re.compile(
    r"\b(?:a\s)?(?:small|smaller|tiny|little|minor|slight|thin|narrow)\s(?:patch|patches|pocket|"
    r"pockets|amount|amounts|portion|portions|part|share|fraction|proportion|quantity|"
    r"percentage|area|areas|bit|strip|sliver|speck|specks|spot|spots|touch|hint|trace)\s(?:of)\b"
    r"|\b(?:a\slittle|a\sfew|a\ssliver\sof|a\stouch\sof|a\shint\sof|traces?\sof|"
    r"a\sbit\sof|a\shandful\sof|specks\sof|dots\sof|sparse|sparsely|scattered|isolated|"
    r"minimal|tiny|hardly|marginal)\b(?!\s(?:further|farther|more|less|to|towards|north|south|"
    r"east|west|higher|lower|above|below|among|amongst|across|around|over|throughout|through|in|"
    r"on|along|within|between|about)\b)"
    r"|\b(?:extra\ssmall|very\ssmall|minimal|limited|modest)\s" + _AMOUNT_NOUN + r"\b"
)
_CUE_WORDS = {
    "dominant_f": (
        "dominated", "characterised", "characterized", "covered", "occupied", "predominantly",
        "predominately", "mostly", "largely", "mainly", "primarily", "chiefly", "overwhelmingly",
        "almost", "nearly", "entirely", "majority", "bulk", "most", "large", "major", "great",
        "vast", "very", "extra", "extremely", "huge", "dominant", "overwhelming", "predominant",
        "lion",
    ),
    "dominant_b": (  # "covers most": anchored on what is covered, rarer than "cover"
        "dominat", "predominat", "prevail", "dominant", "predominant", "prevalent", "most",
        "majority", "bulk", "nearly all", "almost all",
    ),
    "small": (
        "small", "tiny", "little", "minor", "slight", "thin", "narrow", "few", "sliver", "touch",
        "hint", "trace", "bit", "handful", "speck", "dots", "sparse", "scattered", "isolated",
        "minimal", "hardly", "marginal", "extra", "very", "limited", "modest",
    ),
}  # fmt: skip
_DIGIT = re.compile(r"\d")
_COMMA_AND = re.compile(r"[,;]\s*and\b")
_PERCENT = re.compile(r"\b\d+(?:[.,]\d+)?\s?(?:%|percent\b|per\scent\b|pc\b)")
_END_OK = re.compile("[.!?][\"'\u201d\u2019)\\]]*\\s*$")
_WINDOW = 6  # words between an amount cue and the mention it is about
# Function words of the languages an English prompt gets answers in by mistake (de, fr, es, it,
# pt, nl), none of them an English word.
_FOREIGN = frozenset(
    (
        "der", "die", "das", "und", "ist", "mit", "den", "dem", "ein", "eine", "einen", "im",
        "von", "zu", "sich", "auf", "le", "la", "les", "et", "des", "du", "une", "est", "dans",
        "sur", "avec", "el", "los", "las", "y", "del", "con", "una", "es", "en", "il", "di",
        "che", "della", "sono", "nel", "het", "een", "van", "zijn", "ook", "niet", "não", "uma",
        "com", "os", "em", "da", "pour", "par", "qui", "que", "se", "al", "lo", "ist",
    )
)  # fmt: skip
_EN = frozenset(
    (
        "the", "of", "and", "a", "an", "is", "are", "in", "on", "with", "to", "by", "this", "that",
        "which", "it", "its", "from", "as", "at", "there", "be", "has", "have", "image", "shows",
        "while", "some", "large", "small", "part", "parts", "area", "areas", "land", "cover",
        "covered", "mostly", "also", "into", "or", "along", "near", "between", "across"
    )
)  # fmt: skip


class _Tokens:
    """The words (and commas) of one normalised caption with their offsets: the gaps between
    mentions, places and cues are counted from them, not tokenised again."""

    def __init__(self, low: str) -> None:
        found = [(m.start(), m.group()) for m in WORD.finditer(low)]
        self.starts = [s for s, _ in found]
        self.words = [w for _, w in found]
        self.word_starts = [s for s, w in found if w != ","]

    def between(self, lo: int, hi: int) -> list[str]:
        """The tokens starting in ``[lo, hi)``."""
        return self.words[bisect.bisect_left(self.starts, lo) : bisect.bisect_left(self.starts, hi)]


@lru_cache(maxsize=8)
def _tokens(low: str) -> _Tokens:
    return _Tokens(low)


def _between(low: str, lo: int, hi: int) -> list[str]:
    return _tokens(low).between(lo, hi)


def _violation(
    kind: str, cls: int | None, text: str, span: tuple[int, int], reason: str, **extra: str
) -> Violation:
    return {
        "type": kind,
        "class": None if cls is None else CLASS_NAMES[cls],
        "words": text[span[0] : span[1]],
        "span": [span[0], span[1]],
        "reason": reason,
        **extra,
    }


class _Clauses:
    """Clause number of a character offset (clauses end at sentence marks and contrast words)."""

    def __init__(self, low: str) -> None:
        self.marks = [m.start() for m in _CLAUSE.finditer(low)]
        self._memo: dict[int, int] = {}

    def __getitem__(self, pos: int) -> int:
        try:
            return self._memo[pos]
        except KeyError:
            c = self._memo[pos] = bisect.bisect_right(self.marks, pos)
            return c

    def span(self, pos: int) -> tuple[int, int]:
        """The offsets ``[start, end)`` of the clause holding ``pos``."""
        k = self[pos]
        return (self.marks[k - 1] if k else 0), (self.marks[k] if k < len(self.marks) else 1 << 62)


def _groups(places: list[Place], low: str, clause: _Clauses) -> list[list[Place]]:
    """Runs of places of one clause joined by glue ("the top left, bottom right and middle
    parts")."""
    groups: list[list[Place]] = []
    for p in places:
        last = groups[-1][-1] if groups else None
        gap = _between(low, last.end, p.start) if last is not None else []
        if (
            last is not None
            and clause[last.start] == clause[p.start]
            and all(w in _GLUE for w in gap)
            # "the south-west, and the north-west holds shrubland": a new statement, not a list
            and ("and" not in gap or _ends_list(low, p.end))
        ):
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


_PLACE_NOUNS = frozenset(
    (
        "part", "parts", "section", "sections", "area", "areas", "quadrant", "quadrants",
        "corner", "corners", "half", "halves", "side", "sides", "region", "regions", "edge",
        "edges", "portion", "portions", "of",
    )
)  # fmt: skip


def _ends_list(low: str, end: int) -> bool:
    """Whether the place phrase ending at ``end`` closes a list of places (what follows it is
    punctuation, a conjunction or a noun of places, not a verb of its own)."""
    nxt = WORD.search(low, end)
    if nxt is None or low[end : nxt.start()].strip():
        return True
    return nxt.group() in _PLACE_NOUNS or nxt.group() in (",", "and", "or")


def _gap_words(low: str, a: tuple[int, int], b: tuple[int, int]) -> int:
    lo, hi = (a[1], b[0]) if a[1] <= b[0] else (b[1], a[0])
    if hi <= lo:
        return 0
    words = _between(low, lo, hi)
    return len(words) - words.count(",")


def _distance(low: str, m: Mention, span: tuple[int, int]) -> float:
    """How far a place phrase is from a mention, in words. A comma, or an "and" after the place,
    separates more than a word does: in "woodland in the north-west, farmland the north-east"
    farmland belongs to the north-east, in "forest in the north and a lake in the south" the
    lake to the south."""
    after = span[0] >= m.end
    lo, hi = (m.end, span[0]) if after else (span[1], m.start)
    words = _between(low, lo, hi)
    d = float(len(words) + words.count(","))  # a comma counts twice: once as a word, once more
    if not after and "and" in words:
        d += 1.5
    if "and" in words and _COMMA_AND.search(low, lo, hi):
        d += 3  # ", and the sea occupies the east": a new statement
    return d


def _assign(
    mentions: _Mentions, groups: list[list[Place]], clause: _Clauses, low: str
) -> list[list[Place] | None]:
    """Each mention's place group: the nearest one of its clause (see :func:`_distance`); on a
    tie the one after the mention ("water in the east"); the whole image wins only when
    strictly nearer than every named place."""
    out: list[list[Place] | None] = []
    by_clause: dict[int, list[list[Place]]] = {}
    for g in groups:
        by_clause.setdefault(clause[g[0].start], []).append(g)
    for m in mentions:
        if _EXCEPT.search(low, max(0, m.start - 40), m.start):
            out.append(None)  # "apart from the lake, trees cover the top right": not placed
            continue
        best: tuple[float, int, int, list[Place]] | None = None
        for g in by_clause.get(clause[m.start], ()):
            span = (g[0].start, g[-1].end)
            if span[0] >= m.end and _nearer_mention(m, span[0], mentions, low):
                continue  # "snow, with some moss in the south-west": the moss is there
            key = (
                _distance(low, m, span),
                1 if g[0].place == "whole" else 0,
                0 if span[0] >= m.end else 1,
            )
            if best is None or key < best[:3]:
                best = (*key, g)
        out.append(None if best is None else best[3])
    return out


class _Mentions(list[Mention]):
    """A caption's mentions, in order, with their start offsets (for bisecting)."""

    def __init__(self, mentions: list[Mention]) -> None:
        super().__init__(mentions)
        self.starts = [m.start for m in mentions]


def _nearer_mention(m: Mention, place_start: int, mentions: _Mentions, low: str) -> bool:
    """Whether a class named between mention ``m`` and a place after it, not listed with
    ``m`` and right before the place, takes that place from it ("snow, with some moss in the
    south-west"; but "ponds sit within the marsh, one in the top right" keeps it for the ponds:
    the comma after "marsh" ends the marsh's phrase)."""
    prev = m
    starts = mentions.starts
    lo, hi = bisect.bisect_left(starts, m.end), bisect.bisect_left(starts, place_start)
    between = [o for o in mentions[lo:hi] if not o.negated]
    for other in between:
        if not all(w in _LIST_GLUE for w in _between(low, prev.end, other.start)):
            last = between[-1]
            words = _between(low, last.end, place_start)
            return "," not in words and len(words) <= 3
        prev = other
    return False


def _inherit(
    mentions: list[Mention],
    placed: list[list[Place] | None],
    groups: list[list[Place]],
    clause: _Clauses,
) -> list[list[Place]]:
    """Every place each mention is put in: its own group, and the groups later in its clause
    that no mention of their own claims, with no class named between ("a lake fills the top
    left and extends into the centre", "one pond in the top right and a smaller one in the top
    left")."""
    claims = [list(g) if g else [] for g in placed]
    owned = {id(g) for g in placed if g}
    for k, g in enumerate(groups):
        if id(g) in owned:
            continue
        for prev in reversed(groups[:k]):
            if clause[prev[0].start] != clause[g[0].start]:
                break
            if id(prev) not in owned:
                continue
            between = any(prev[-1].end <= m.start < g[0].start for m in mentions)
            if not between:
                for i, pg in enumerate(placed):
                    if pg is prev:
                        claims[i] += g
                break
            # Else the last class named before it: "fields take up a large part of the top
            # left quadrant and a smaller part of the bottom right".
            last = [
                i
                for i, m in enumerate(mentions)
                if m.end <= g[0].start and clause[m.start] == clause[g[0].start] and not m.negated
            ]
            if last:
                claims[last[-1]] += g
            break
    return claims


def _share(classes: list[int], where: list[Place] | None, pc: list[list[int]]) -> tuple[float, str]:
    """Share of ``classes`` among the land-cover pixels of the places (or of the image)."""
    names = [p.place for p in where] if where else ["whole"]
    rows = [pc[_PLACE[n]] for n in dict.fromkeys(names)]
    land = sum(sum(r[1:]) for r in rows)
    share = sum(r[c] for r in rows for c in classes) / land if land else 0.0
    return share, " and ".join(dict.fromkeys(names))


def _listed(i: int, mentions: list[Mention], low: str) -> list[int]:
    """The classes of mention ``i`` and of those listed right after it ("mostly wetland and
    shrub": the two together are what dominates)."""
    out = [mentions[i].cls]
    for a, b in zip(mentions[i:], mentions[i + 1 :], strict=False):
        gap = low[a.end : b.start]
        if (
            b.negated
            or _CLAUSE.search(gap)
            or not all(w in _LIST_GLUE for w in _between(low, a.end, b.start))
        ):
            break
        out.append(b.cls)
    return list(dict.fromkeys(out))


_SUBJECT = re.compile(
    r"(?:\s(?:area|part|portion|section|region|half|quadrant|side|zone|band|strip|third|corner))?"
    r"(?:\s(?:of\s)?(?:the|this)\s(?:image|scene|patch|picture|area))?\s(?:is|are|was|were)"
    r"(?:\s(?:also|again|then))?\s$"
)


_IMAGE_SUBJECT = re.compile(r"\b(?:the|this)\s(?:image|scene|patch|picture)\s(?:is|are)\s$")
_OF_THE = re.compile(r"\s*(?:of\s)?(?:the\s|its\s)?")


def _scope(
    cue: re.Match[str], places: list[Place], starts: list[int], low: str
) -> list[Place] | None:
    """The place an amount cue names itself: "a large part of the top left quadrant", "the
    central area of the image is mostly forest", "the image is dominated by shrubs"."""
    s, e = cue.span()
    k = bisect.bisect_left(starts, s)
    if k and places[k - 1].end <= s and _SUBJECT.fullmatch(low, places[k - 1].end, s):
        return [places[k - 1]]
    if _IMAGE_SUBJECT.search(low, max(0, s - 32), s):
        return [Place("whole", s, s)]
    if k < len(places) and places[k].start >= e and _OF_THE.fullmatch(low, e, places[k].start):
        return [places[k]]
    return None


def _attach(
    cue: re.Match[str], mentions: _Mentions, clause: _Clauses, low: str,
    forward_first: bool, both_ways: bool = True, window: int = _WINDOW,
) -> int | None:  # fmt: skip
    """The mention an amount cue is about: the first within reach in its preferred direction."""
    lo, hi = clause.span(cue.start())
    starts = mentions.starts
    same = [
        i
        for i in range(bisect.bisect_left(starts, lo), bisect.bisect_left(starts, hi))
        if not mentions[i].negated
    ]
    after = [i for i in same if mentions[i].start >= cue.end()]
    before = [i for i in reversed(same) if mentions[i].end <= cue.start()]
    sides = (after, before) if forward_first else (before, after)
    for side in sides if both_ways else sides[:1]:
        for i in side[:1]:
            m = mentions[i]
            gap = low[cue.end() : m.start] if m.start >= cue.end() else low[m.end : cue.start()]
            if ")" in gap and m.start >= cue.end():
                continue  # "shrub (large portion), moss": the bracket speaks of shrub
            if _gap_words(low, (m.start, m.end), (cue.start(), cue.end())) <= window:
                return i
    return None


def _amounts(
    text: str, low: str, mentions: _Mentions, placed: list[list[Place] | None],
    places: list[Place], pc: list[list[int]], clause: _Clauses, rules: Rules,
) -> list[Violation]:  # fmt: skip
    out: list[Violation] = []
    seen: set[tuple[str, int]] = set()
    cues: list[tuple[int, int]] = []
    pstarts = [p.start for p in places]
    for kind, pattern, forward in _cue_scanners():
        for cue in pattern.finditer(low, _tokens(low).word_starts):
            if any(s < cue.end() and cue.start() < e for s, e in cues):
                continue
            if re.match(r"\s(?:of\s)?(?:it|them)\b", low[cue.end() :]):
                continue  # "the largest patch, holding a large part of it": of the class
            cues.append(cue.span())
            named = _scope(cue, places, pstarts, low)
            if named and named[0].start >= cue.end():
                # "fields take up the top left and most of the top right": the cue is about
                # the class before it, in the place after it.
                i = _attach(cue, mentions, clause, low, False, window=2 * _WINDOW)
            else:  # "a little" speaks of what follows it; a dominance cue of either side
                i = _attach(cue, mentions, clause, low, forward, both_ways=kind == "dominant")
            if i is None or (kind, i) in seen:
                continue
            seen.add((kind, i))
            m = mentions[i]
            classes = _listed(i, mentions, low) if kind == "dominant" else [m.cls]
            share, scope = _share(classes, named or placed[i], pc)
            wrong = (
                share < rules.dominance_share if kind == "dominant" else share > rules.small_share
            )
            if wrong:
                says = "dominates" if kind == "dominant" else "is a small amount"
                out.append(
                    _violation(
                        "amount", m.cls, text, (min(cue.start(), m.start), max(cue.end(), m.end)),
                        f"says {' and '.join(CLASS_NAMES[c] for c in classes)} {says}, but "
                        f"{'they are' if len(classes) > 1 else 'it is'} {share:.0%} of the "
                        f"{scope}",
                        scope=scope,
                    )
                )  # fmt: skip
    return out


@cache
def _cue_scanners() -> tuple[tuple[str, Anchored, bool], ...]:
    return (
        # first: "covers the majority of" is about what precedes it
        ("dominant", Anchored(_DOM_B, _CUE_WORDS["dominant_b"], 3), False),
        ("dominant", Anchored(_DOM_F, _CUE_WORDS["dominant_f"], 1), True),
        ("small", Anchored(_SMALL, _CUE_WORDS["small"], 1), True),
    )


@cache
def _banned_automaton(banned: tuple[str, ...], hedges: tuple[str, ...]) -> Automaton:
    """Banned stems (any ending: "appear" bans "appears") and hedges (whole words only)."""
    a = Automaton()
    for w in hedges:
        a.add_word(normalise(w), (len(w), False, "a hedge"))
    for w in banned:  # a banned stem wins over a hedge of the same words
        a.add_word(normalise(w), (len(w), True, "a word the style bans"))
    a.make_automaton()
    return a


def _banned(text: str, low: str, rules: Rules) -> list[Violation]:
    out: list[Violation] = []
    last = -1
    n = len(low)
    hits = []
    for end, (length, stem, why) in _banned_automaton(rules.banned, rules.hedges).iter(low):
        start, stop = end - length + 1, end + 1
        if start > 0 and low[start - 1].isalnum():
            continue
        if stem:
            while stop < n and low[stop].isalnum():
                stop += 1
        elif stop < n and low[stop].isalnum():
            continue
        hits.append((start, -stop, why))
    for start, neg_stop, why in sorted(hits):
        if start < last:
            continue
        last = -neg_stop
        span = (start, last)
        out.append(_violation("banned", None, text, span, f"'{low[start:last]}' is {why}"))
    if not rules.numbers and _DIGIT.search(low):
        for m in _PERCENT.finditer(low):
            out.append(_violation("banned", None, text, m.span(), "a percentage the style forbids"))
    return out


def _english(words: list[str], low: str) -> tuple[bool, str]:
    """Whether a caption is English: by its share of English function words; when that is
    low, by those of the languages captions come back in instead, and only when neither is
    clear by ``py3langid`` (a model: milliseconds a caption)."""
    if len(words) < 6:
        return True, "en"
    share = sum(w in _EN for w in words) / len(words)
    if share >= 0.15:
        return True, "en"
    foreign = sum(w in _FOREIGN for w in words) / len(words)
    if foreign >= 0.15 and foreign > 2 * share:
        return False, "not en"
    import py3langid  # only for the rare caption that is neither: it loads a model

    lang, _ = py3langid.classify(low)
    return lang == "en", str(lang)


def check(
    text: str,
    counts: npt.ArrayLike,
    rules: Rules,
    finish_reason: str | None = None,
) -> list[Violation]:
    """The violations of ``text`` against region counts ``counts`` ``(regions, classes)``."""
    pc: list[list[int]] = place_counts(np.asarray(counts)).tolist()  # plain ints: fast to index
    whole = pc[_PLACE["whole"]]
    low = normalise(text)
    out: list[Violation] = []
    tokens = _tokens(low).words
    lang_ok, lang = _english(tokens, low)
    if not lang_ok:
        return [_violation("language", None, text, (0, len(text)), f"not English (looks {lang})")]
    mentions = _Mentions(find_mentions(text))
    clause = _Clauses(low)
    places = find_places(low, _tokens(low).word_starts)
    groups = _groups(places, low, clause)
    placed = _assign(mentions, groups, clause, low)
    claims = _inherit(mentions, placed, groups, clause)
    said = {m.cls for m in mentions if not m.negated}
    absent: set[int] = set()
    for m in mentions:
        n = whole[m.cls]
        if not m.negated and n < rules.min_pixels:
            absent.add(m.cls)
            out.append(
                _violation(
                    "hallucinated", m.cls, text, (m.start, m.end),
                    f"'{m.words}' names {m.name}, which has {n} pixels in the patch",
                )
            )  # fmt: skip
    land = sum(whole[1:])
    if land:
        largest = max(range(1, len(whole)), key=lambda c: (whole[c], -c))
        for c in range(1, len(whole)):
            share = whole[c] / land
            if (c == largest or share > rules.dominant_share) and c not in said:
                out.append(
                    _violation(
                        "omitted", c, text, (0, 0),
                        f"{CLASS_NAMES[c]} covers {share:.0%} of the land cover and is never named",
                    )
                )  # fmt: skip
    touched = {
        id(p) for g in groups if _TOUCH.search(low, max(0, g[0].start - 24), g[0].start) for p in g
    }
    for m, where in zip(mentions, claims, strict=True):
        if m.negated or not where or m.cls in absent:
            continue
        for p in where:
            n = pc[_PLACE[p.place]][m.cls]
            # "touching the right edge" holds with a pixel there; any other place needs more.
            need = 1 if id(p) in touched else rules.min_pixels
            if p.place != "whole" and n < need:
                out.append(
                    _violation(
                        "misplaced", m.cls, text, (min(m.start, p.start), max(m.end, p.end)),
                        f"puts {m.name} in the {p.place}, which holds {n} pixels of it",
                        place=p.place,
                    )
                )  # fmt: skip
    out += [
        v
        for v in _amounts(text, low, mentions, placed, places, pc, clause, rules)
        if CLASS_NAMES.index(v["class"]) not in absent  # already named as hallucinated
    ]
    out += _banned(text, low, rules)
    n_words = len(tokens) - tokens.count(",")
    if not rules.min_words <= n_words <= rules.max_words:
        out.append(
            _violation(
                "length", None, text, (0, len(text)),
                f"{n_words} words; the style wants {rules.min_words} to {rules.max_words}",
            )
        )  # fmt: skip
    stripped = text.rstrip()
    if finish_reason == "length":
        out.append(_violation("truncated", None, text, (0, len(text)), "the answer hit max_tokens"))
    elif stripped and (not _END_OK.search(stripped) or stripped.endswith(("...", "…"))):
        tail = max(stripped.rfind(". "), stripped.rfind("! "), stripped.rfind("? "))
        out.append(
            _violation(
                "truncated", None, text, (tail + 2 if tail >= 0 else 0, len(stripped)),
                "the caption ends mid-sentence",
            )
        )  # fmt: skip
    return out


def score(violations: Sequence[Violation]) -> float:
    """1 for a clean caption, less by each violation's penalty, never below 0."""
    return round(max(0.0, 1.0 - sum(PENALTY[v["type"]] for v in violations)), 4)
