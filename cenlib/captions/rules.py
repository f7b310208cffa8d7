"""``rules``: a deterministic writer of one caption paragraph from a patch's statistics.

It obeys the instructions the prompt styles give a model (see :data:`cenlib.prompts.cen35.SYSTEM`)
and states nothing the statistics do not support, which makes it the demo's default captioner,
a zero-hallucination baseline for the verifier and a stand-in endpoint for the tests.

For the ``chatearthnet-3.5`` statement (:func:`cenlib.prompts.context_json`) the paragraph is:

1. an opening sentence naming the dominant class (first of ``overall``) and the parts where it
   ranks first (or, failing that, where it is listed at all);
2. one sentence per part in ``REGION_NAMES`` order, its classes in the order given (largest area
   first), each as "<amount> of <class>" where the amount's adjective is a synonym of the part's
   bin (:data:`AMOUNT_WORDS`) and its noun one of :data:`AMOUNT_NOUNS`; a part with nothing listed
   "has no land-cover data" (or, when the prompt said so, "only a few scattered pixels");
3. a closing sentence on the main theme: a phrase for the dominant class
   (:data:`THEME_BASE`), "with" a phrase for the second one (:data:`THEME_WITH`).

Classes are written with :data:`PROSE` names, each of which starts with the class name, so a
reader matching class names by prefix finds them. Percentages are never written: the bins carry
the amounts, as in ChatEarthNet's captions.

Variation: every wording slot (opening, each part's frame, part name and linking words, each
item's adjective, the theme) is chosen by :func:`cenlib.prompts.context.draws` from a sha256
stream of (seed, patch id, slot); the "rules" tag in the key keeps these choices independent of
the nouns the prompt itself drew from the same seed and id. Amount nouns then rotate through the
paragraph from a drawn start, and a drawn adjective gives way to a less used synonym of its bin,
so that one paragraph does not repeat an amount phrase. Same inputs, same text, in any process.

:func:`answer` serves the ``rules`` endpoint of the caption stage, which passes it the prompt
record's facts (the style's statement, :class:`cenlib.prompts.PromptStyle` ``describe``): it
never reads the English then. Given no facts (a prompts file written before records carried
them, or a stand-in LLM behind an OpenAI-compatible server such as ``tests/openai_server.py``)
it reads the statement back from the user message (:func:`parse_user_text`,
:func:`parse_layout_text`), as a model would; both routes give the same text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from cenlib.classes import CLASS_NAMES
from cenlib.prompts import (
    BINS,
    GRID3_NAMES,
    REGION_NAMES,
    THRESHOLD,
    PatchContext,
    context_json,
    draws,
    join_words,
    percent_bin,
    ranked,
)

T = TypeVar("T")

NAME = "rules"
VERSION = 1  # bumped whenever the same statement, seed and id would give another text

# How each class reads in prose. Every entry starts with the class name itself so that "tree"
# still finds "tree cover"; the longer forms read as land cover rather than as objects.
PROSE: Mapping[str, str] = {
    "water": "water",
    "developed area": "developed area",
    "tree": "tree cover",
    "shrub": "shrubland",
    "grass": "grassland",
    "crop": "cropland",
    "bare land": "bare land",
    "snow": "snow",
    "wetland": "wetland",
    "mangroves": "mangroves",
    "moss": "moss",
}
_PLURAL = frozenset({"mangroves"})  # prose names that take a plural verb

# Adjectives per bin of chatearthnet-3.5: the bin's own words first, then synonyms. The sets are
# disjoint, so every amount word names exactly one bin.
AMOUNT_WORDS: Mapping[str, tuple[str, ...]] = {
    "extra small": ("extra small", "very small", "tiny", "minimal"),
    "small": ("small", "modest", "limited", "minor"),
    "medium": ("medium", "moderate", "fair", "medium-sized"),
    "large": ("large", "big", "substantial", "considerable"),
    "extra large": ("extra large", "very large", "vast", "overwhelming"),
}
# The prompt's nouns plus one; rotated through the paragraph so that no two neighbours share one.
AMOUNT_NOUNS: tuple[str, ...] = ("fraction", "part", "portion", "amount", "quantity", "share")
_BIG = frozenset({"large", "extra large"})  # bins that make "dominates" or "is covered by" true

# Main theme: a phrase for the dominant class, then "with" one for the second. They name land
# cover only: no terrain, shape or size that the statistics do not give.
THEME_BASE: Mapping[str, tuple[str, ...]] = {
    "water": ("open water", "a stretch of open water"),
    "developed area": ("a built-up area", "a built-up landscape"),
    "tree": ("a forested landscape", "a wooded landscape"),
    "shrub": ("a shrubland landscape", "a scrub-covered landscape"),
    "grass": ("open grassland", "a grassy landscape"),
    "crop": ("farmland", "an agricultural landscape"),
    "bare land": ("a barren landscape", "an expanse of bare ground"),
    "snow": ("a snow-covered landscape", "a snowy landscape"),
    "wetland": ("a wetland landscape", "a marshy landscape"),
    "mangroves": ("a mangrove forest", "a mangrove landscape"),
    "moss": ("a moss-covered landscape", "a landscape of moss"),
}
THEME_WITH: Mapping[str, tuple[str, ...]] = {
    "water": ("some open water", "areas of water"),
    "developed area": ("some built-up land", "built-up areas"),
    "tree": ("some tree cover", "areas of woodland"),
    "shrub": ("some shrubland", "areas of scrub"),
    "grass": ("some grassland", "grassy areas"),
    "crop": ("some cropland", "farmed fields"),
    "bare land": ("some bare land", "areas of bare ground"),
    "snow": ("some snow", "snowy areas"),
    "wetland": ("some wetland", "marshy areas"),
    "mangroves": ("some mangroves", "mangrove stands"),
    "moss": ("some moss", "mossy areas"),
}
THEME_OPENERS: tuple[str, ...] = (
    "Overall, the scene is {theme}.",
    "In short, this is {theme}.",
    "Taken together, the image shows {theme}.",
    "All in all, the scene is {theme}.",
)
# When only the dominant class reaches the threshold; "of note" = listed by the prompt.
THEME_ALONE = " with no other land-cover type of note"
# When no class reaches the threshold over the image.
THEME_EMPTY = "In short, no land-cover type stands out over the image as a whole."

# Opening sentences: (main clause, tail when the class ranks first somewhere, tail when it is
# only listed somewhere). {D} is the class, {loc} where; verbs in braces agree with the class.
_OPENINGS: tuple[tuple[str, str, str], ...] = (
    ("{D} {is} the main land cover of the image", ", leading {loc}", ", present {loc}"),
    ("the image is dominated by {D}", ", which {leads} {loc}", ", which {is} present {loc}"),
    (
        "{D} {occupies} the largest area of the scene",
        " and {leads} {loc}",
        " and {is} present {loc}",
    ),
    (
        "of all land-cover types, {D} {takes} up the most ground",
        ", ranking first {loc}",
        ", found {loc}",
    ),
)
_VERBS: Mapping[str, str] = {"is": "are", "leads": "lead", "occupies": "occupy", "takes": "take"}

# Part sentences: (one class, several classes, needs a large or extra large first class).
_FRAMES: tuple[tuple[str, str, bool], ...] = (
    ("{part} holds {lead}", "{part} holds {lead}, together with {rest}", False),
    ("{part} contains {lead}", "{part} contains {lead}, followed by {rest}", False),
    ("in {part}, there is {lead}", "in {part}, there is {lead}, along with {rest}", False),
    ("in {part}, {lead} stands out", "in {part}, {lead} comes first, ahead of {rest}", False),
    ("{part} shows {lead}", "{part} shows {lead}, plus {rest}", False),
    ("{lead} dominates {part}", "{lead} dominates {part}, with {rest} as well", True),
    ("{part} is covered by {lead}", "{part} is covered by {lead}, with {rest} in addition", True),
)
_EMPTY: tuple[str, ...] = (
    "{part} has no land-cover data",
    "there is no land-cover data for {part}",
    "{part} carries no land-cover data",
)
_SCATTERED: tuple[str, ...] = (
    "{part} holds only a few scattered pixels of land cover",
    "{part} has only a few scattered pixels of land cover",
)
_PART: tuple[str, ...] = ("the {name} part", "the {name} of the image")
# Words that link a part to the one before: true of the geometry whatever the part holds.
_LINKS: Mapping[str, tuple[str, ...]] = {
    "top left": ("", "First, ", "To begin, "),
    "top right": ("", "Next, ", "To the right, ", "Across the top, "),
    "bottom left": ("", "Below, ", "Lower down, ", "Further down, "),
    "bottom right": ("", "Next to it, ", "Beside it, ", "Then, "),
    "middle": ("", "Finally, ", "Lastly, ", "To finish, "),
}

Json = dict[str, Any]


class _Choices:
    """Seeded wording choices for one patch, one sha256 stream per slot."""

    def __init__(self, seed: int, patch_id: str) -> None:
        self.seed = int(seed)
        self.patch_id = str(patch_id)

    def index(self, slot: str, k: int) -> int:
        if k <= 1:
            return 0
        return draws(self.seed, f"{self.patch_id}\x00{NAME}\x00{slot}", 1, k)[0]

    def pick(self, slot: str, options: Sequence[T]) -> T:
        return options[self.index(slot, len(options))]


class _Amounts:
    """Amount phrases for one paragraph: nouns rotate, adjectives spread over their synonyms."""

    def __init__(self, choices: _Choices) -> None:
        self.choices = choices
        self.next_noun = choices.index("nouns", len(AMOUNT_NOUNS))
        self.used: set[str] = set()
        self.adjectives: dict[str, int] = {}  # times each adjective was used

    def phrase(self, bin_: str, slot: str, avoid: str = "") -> str:
        """Words like "a large portion" for ``bin_``; ``avoid``: a noun the sentence has."""
        words = AMOUNT_WORDS[bin_]
        noun = AMOUNT_NOUNS[self.next_noun % len(AMOUNT_NOUNS)]
        self.next_noun += 1
        if noun == avoid:  # "the top left part holds a large part of ..." reads badly
            noun = AMOUNT_NOUNS[self.next_noun % len(AMOUNT_NOUNS)]
            self.next_noun += 1
        # The drawn adjective unless another synonym of the bin has been used less: a paragraph
        # with three parts of "large" cover then says "large", "big" and "substantial".
        first = self.choices.index(slot, len(words))
        order = [words[(first + i) % len(words)] for i in range(len(words))]
        adj = min(order, key=lambda w: (self.adjectives.get(w, 0), f"{w} {noun}" in self.used))
        self.adjectives[adj] = self.adjectives.get(adj, 0) + 1
        text = f"{adj} {noun}"
        self.used.add(text)
        return f"{_article(text)} {text}"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _prose(name: str) -> str:
    try:
        return PROSE[name]
    except KeyError:
        raise ValueError(
            f"unknown land-cover class {name!r}; known: {', '.join(CLASS_NAMES[1:])}"
        ) from None


def _verb(verb: str, name: str) -> str:
    return _VERBS[verb] if name in _PLURAL else verb


def _check_bin(bin_: str) -> str:
    if bin_ not in AMOUNT_WORDS:
        raise ValueError(f"unknown amount bin {bin_!r}; known: {', '.join(AMOUNT_WORDS)}")
    return bin_


def _item_bin(item: Mapping[str, Any]) -> str:
    # Statements parsed back from a prompt carry the bin only; hand-made ones may carry the
    # percent only. The bin wins when both are there: it is what the prompt showed.
    if "bin" in item:
        return _check_bin(str(item["bin"]))
    return percent_bin(int(item["percent"]))


def _places(names: Sequence[str]) -> str:
    if len(names) == len(REGION_NAMES):
        return "in all five parts"
    return f"in the {join_words(list(names))} part{'s' if len(names) > 1 else ''}"


def _theme(choices: _Choices, dominant: str | None, second: str | None) -> str:
    if dominant is None:
        return THEME_EMPTY
    theme = choices.pick("theme/base", THEME_BASE[dominant])
    theme += f" with {choices.pick('theme/with', THEME_WITH[second])}" if second else THEME_ALONE
    return choices.pick("theme", THEME_OPENERS).format(theme=theme)


DOMINANT_PERCENT = 30  # the verify stage's dominance share, in percent (rounded: need more)


def _least_share(name: str, regions: Mapping[str, Any]) -> int:
    """A lower bound of a class's share of the image, in percent: the least of its listed
    shares (their bins' floors) over the four quadrants, a quadrant that does not list it
    counting 0. The image's share is a mean of the quadrants' weighted by their land-cover
    pixels, so never below."""
    quads = ("top left", "top right", "bottom left", "bottom right")
    floor = {"extra small": 0, "small": 10, "medium": 20, "large": 50, "extra large": 80}

    def percent(it: Mapping[str, Any]) -> int:
        # The bin's floor, not the percent: facts read back from English carry bins only, and
        # both routes must write the same caption.
        return floor.get(_item_bin(it), 0)

    return min(
        next((percent(it) for it in regions.get(q, ()) if it["class"] == name), 0) for q in quads
    )


def _opening(choices: _Choices, overall: Sequence[str], regions: Mapping[str, Any]) -> str:
    dominant = overall[0]
    leads = [r for r in REGION_NAMES if regions[r] and regions[r][0]["class"] == dominant]
    present = [r for r in REGION_NAMES if any(it["class"] == dominant for it in regions[r])]
    main, lead_tail, present_tail = choices.pick("open", _OPENINGS)
    if "dominated" in main and _least_share(dominant, regions) <= DOMINANT_PERCENT:
        # The facts give region shares only: "dominated by" needs at least a third of the
        # image, which the four quadrants' listed shares must vouch for.
        main, lead_tail, present_tail = _OPENINGS[0]
    text = main
    if leads:
        text += lead_tail.replace("{loc}", _places(leads))
    elif present:
        text += present_tail.replace("{loc}", _places(present))
    for verb in _VERBS:
        text = text.replace("{" + verb + "}", _verb(verb, dominant))
    return _cap(text.replace("{D}", _prose(dominant))) + "."


def _region_sentence(
    choices: _Choices,
    amounts: _Amounts,
    name: str,
    items: Sequence[Mapping[str, Any]],
    scattered: bool,
) -> str:
    part = choices.pick(f"part/{name}", _PART).format(name=name)
    avoid = "part" if part.endswith(" part") else ""
    link = choices.pick(f"link/{name}", _LINKS.get(name, ("",)))
    if not items:
        frame = choices.pick(f"frame/{name}", _SCATTERED if scattered else _EMPTY)
        return _cap(link + frame.format(part=part)) + "."
    bins = [_item_bin(it) for it in items]
    phrases = [
        f"{amounts.phrase(b, f'adj/{name}/{i}', avoid)} of {_prose(str(it['class']))}"
        for i, (it, b) in enumerate(zip(items, bins, strict=True))
    ]
    frames = [f for f in _FRAMES if not f[2] or bins[0] in _BIG]
    one, several, _ = choices.pick(f"frame/{name}", frames)
    if len(phrases) == 1:
        body = one.format(part=part, lead=phrases[0])
    else:
        body = several.format(part=part, lead=phrases[0], rest=join_words(phrases[1:]))
    return _cap(link + body) + "."


def sentences(ctx_json: Mapping[str, Any], seed: int, patch_id: str) -> list[tuple[str, str]]:
    """The caption of a ``chatearthnet-3.5`` statement as ``(slot, sentence)`` pairs, in order.

    Slots: ``"opening"`` (absent when no class reaches the threshold over the image but a part
    lists some), each of ``REGION_NAMES``, then ``"theme"``. ``ctx_json`` is the shape of
    :func:`cenlib.prompts.context_json`; items need ``class`` and ``bin`` (or ``percent``). An
    optional ``"scattered"`` list names empty parts that still hold a few pixels of land cover
    (the prompt tells a model so; :func:`parse_user_text` reads it back).
    """
    overall = [str(c) for c in ctx_json.get("overall", [])]
    regions = ctx_json.get("regions")
    if not isinstance(regions, Mapping) or any(r not in regions for r in REGION_NAMES):
        raise ValueError(f"ctx_json['regions'] must map each of {list(REGION_NAMES)} to a list")
    for name in overall:
        _prose(name)
    scattered = set(ctx_json.get("scattered", ()))
    choices = _Choices(seed, patch_id)
    amounts = _Amounts(choices)
    out: list[tuple[str, str]] = []
    if overall:
        out.append(("opening", _opening(choices, overall, regions)))
    elif not any(regions[r] for r in REGION_NAMES):
        out.append(("opening", "The image has no land-cover data."))
    for name in REGION_NAMES:
        out.append(
            (name, _region_sentence(choices, amounts, name, regions[name], name in scattered))
        )
    out.append(
        (
            "theme",
            _theme(choices, overall[0] if overall else None, overall[1] if overall[1:] else None),
        )
    )
    return out


def caption_from_context(ctx_json: Mapping[str, Any], seed: int, patch_id: str) -> str:
    """One paragraph describing a ``chatearthnet-3.5`` statement (see :func:`sentences`).

    :func:`cenlib.prompts.context_json` names its ``"scattered"`` parts; a hand-made
    statement without that list says of every empty part that it "has no land-cover data".
    """
    return " ".join(s for _, s in sentences(ctx_json, seed, patch_id))


def scattered_regions(ctx: PatchContext) -> list[str]:
    """Parts with land-cover pixels but no class listed: the prompt calls them scattered pixels."""
    return [
        name
        for name, counts in zip(REGION_NAMES, ctx.regions.tolist(), strict=True)
        if sum(counts[1:]) > 0 and not ranked(counts, THRESHOLD)
    ]


def caption(ctx: PatchContext, seed: int, patch_id: str) -> str:
    """The caption of one patch's counts: :func:`caption_from_context` of its statement."""
    return caption_from_context(context_json(ctx, seed, patch_id), seed, patch_id)


# --- cen-layout ------------------------------------------------------------------------------

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_LAYOUT_OPENINGS: tuple[str, ...] = (
    "{D} {is} the main land cover, taking up {amount} of the image {place}",
    "the image is dominated by {D}, which {occupies} {amount} of it {place}",
    "{amount} of the image is {D}, the largest land-cover type, {place}",
)
_LAYOUT_OTHERS: tuple[str, ...] = (
    "{D} {occupies} {amount} of the image {place}",
    "{amount} of the image is {D}, {place}",
    "there is also {amount} of {D} {place}",
)
_LAYOUT_SHAPES: tuple[str, ...] = (", forming {shape}", ", laid out as {shape}")
_NO_DATA: tuple[str, ...] = (
    "{amount} of the image has no land-cover data",
    "no land-cover data covers {amount} of the image",
)


def _layout_percent(text: str) -> int:
    """``"83 %"`` -> 83; ``"under 1 %"`` -> 0 (the bin is extra small either way)."""
    found = re.search(r"(\d+)\s*%", str(text))
    if found is None or "under" in str(text):
        return 0
    return min(100, int(found.group(1)))


def _shape_words(shape: str, amounts: _Amounts, slot: str) -> str:
    # The layout prompt gives shapes with digits; the caption says amounts in words, as the
    # style's system message asks.
    def share(m: re.Match[str]) -> str:
        return f"holding {amounts.phrase(percent_bin(int(m.group(1))), slot)} of it"

    shape = re.sub(r"holding (\d+) % of it", share, shape)
    return re.sub(r"^(\d) separate", lambda m: f"{_NUMBER_WORDS[int(m.group(1))]} separate", shape)


def layout_sentences(
    layout_json: Mapping[str, Any], seed: int, patch_id: str
) -> list[tuple[str, str]]:
    """The caption of a ``cen-layout`` statement as ``(slot, sentence)`` pairs, in order.

    Slots: each class name, largest first (where it lies and its shape), ``"no data"`` when part
    of the image has none, then ``"theme"``; an image without classes opens with ``"empty"``.
    """
    classes = list(layout_json.get("classes", []))
    choices = _Choices(seed, patch_id)
    amounts = _Amounts(choices)
    out: list[tuple[str, str]] = []
    if not classes:
        out.append(("empty", "The image has no land-cover data."))
    for i, item in enumerate(classes):
        name = str(item["class"])
        where = list(item.get("where") or [])
        unknown = [w for w in where if w not in GRID3_NAMES]
        if unknown:
            raise ValueError(f"unknown grid cells {unknown}; known: {list(GRID3_NAMES)}")
        place = f"in the {join_words(where)}" if where else "across the whole image"
        amount = amounts.phrase(percent_bin(_layout_percent(item["percent"])), f"adj/{name}")
        frames = _LAYOUT_OPENINGS if i == 0 else _LAYOUT_OTHERS
        text = choices.pick(f"frame/{name}", frames)
        if "dominated" in text and _layout_percent(item["percent"]) <= DOMINANT_PERCENT:
            text = frames[0]  # "dominated by" needs a third of the image
        for verb in _VERBS:
            text = text.replace("{" + verb + "}", _verb(verb, name))
        text = text.format(D=_prose(name), amount=amount, place=place)
        if item.get("shape"):
            shape = _shape_words(str(item["shape"]), amounts, f"shape/{name}")
            text += choices.pick(f"shape/{name}", _LAYOUT_SHAPES).format(shape=shape)
        out.append((name, _cap(text) + "."))
    if layout_json.get("no_data"):
        amount = amounts.phrase(percent_bin(_layout_percent(layout_json["no_data"])), "adj/nd")
        out.append(("no data", _cap(choices.pick("no data", _NO_DATA).format(amount=amount)) + "."))
    names = [str(c["class"]) for c in classes]
    out.append(
        ("theme", _theme(choices, names[0] if names else None, names[1] if names[1:] else None))
    )
    return out


def caption_layout(layout_json: Mapping[str, Any], seed: int, patch_id: str) -> str:
    """One paragraph describing a ``cen-layout`` statement (see :func:`layout_sentences`)."""
    return " ".join(s for _, s in layout_sentences(layout_json, seed, patch_id))


# --- reading a statement back from a prompt --------------------------------------------------

# Longest names first, so that an alternation never stops at a shorter name inside a longer one.
_CLASS_RE = "|".join(re.escape(c) for c in sorted(CLASS_NAMES[1:], key=len, reverse=True))
_BIN_RE = "|".join(re.escape(b) for _, b in sorted(BINS, key=lambda b: -len(b[1])))
_ITEM = re.compile(rf"\b({_CLASS_RE})\s*\(\s*({_BIN_RE})\b[^)]*\)")
_OVERALL = re.compile(
    r"over the whole image(?:\s*,\s*from most to least)?\s*:\s*(?P<list>[^.]*)"
    r"|(?P<none>the image as a whole has no land-cover data)"
)
_PART_MENTION = re.compile(
    r"\bthe (?P<name>" + "|".join(re.escape(r) for r in REGION_NAMES) + r") part\b"
)
_CELL_RE = "|".join(re.escape(c) for c in sorted(GRID3_NAMES, key=len, reverse=True))
_PERCENT_RE = r"under 1\s*%|\d+\s*%"


def _normal(text: str) -> str:
    # Case, line breaks and runs of spaces carry nothing in these prompts; a relay may alter them.
    return re.sub(r"\s+", " ", text).strip().lower()


def parse_user_text(text: str) -> Json:
    """Read a ``chatearthnet-3.5`` user message back into its statement.

    Returns ``{"overall": [...], "regions": {name: [{"class", "bin"}, ...]}, "scattered":
    [names]}``: :func:`cenlib.prompts.context_json` without ``percent`` (the message gives bins
    only), plus the parts the message says hold a few scattered pixels. Tolerates changes of case,
    line breaks and spacing, a missing final period, "and" in lists and the parts in any order;
    raises ``ValueError`` when the overall line or a part is missing or unreadable.
    """
    body = _normal(text)
    # What is said of a part runs to the next part's mention (or a period): the message reads
    # the same with its periods or line breaks lost.
    mentions = list(_PART_MENTION.finditer(body))
    found = _OVERALL.search(body, 0, mentions[0].start() if mentions else len(body))
    if found is None:
        raise ValueError("not a chatearthnet-3.5 prompt: no line on the whole image")
    overall = [] if found.group("none") else re.findall(rf"\b({_CLASS_RE})\b", found["list"])
    said: dict[str, str] = {}
    for i, m in enumerate(mentions):
        end = mentions[i + 1].start() if i + 1 < len(mentions) else len(body)
        said.setdefault(m["name"], body[m.end() : end].split(".")[0])
    regions: dict[str, list[dict[str, str]]] = {}
    scattered: list[str] = []
    for name in REGION_NAMES:
        if name not in said:
            raise ValueError(f"not a chatearthnet-3.5 prompt: nothing on the {name} part")
        says = said[name]
        items = [{"class": c, "bin": b} for c, b in _ITEM.findall(says)]
        if len(items) != says.count("("):
            # An entry it cannot read (unknown class or bin): better no caption than one that
            # silently leaves a class out.
            raise ValueError(f"cannot read what the prompt says of the {name} part: {says!r}")
        if not items:
            if "scattered" in says:
                scattered.append(name)
            elif "no land-cover data" not in says:
                raise ValueError(f"cannot read what the prompt says of the {name} part: {says!r}")
        regions[name] = items
    return {"overall": overall, "regions": regions, "scattered": scattered}


def parse_layout_text(text: str) -> Json:
    """Read a ``cen-layout`` user message back into :func:`cenlib.prompts.layout.context_json`.

    Line based (one class or grid cell per ``- `` line); case and spacing are tolerated.
    """
    classes: list[Json] = []
    grid: dict[str, list[dict[str, str]]] = {}
    no_data: str | None = None
    item = re.compile(
        rf"^-\s*(?P<cls>{_CLASS_RE})\s*,\s*(?P<pct>{_PERCENT_RE}) of the image\s*:\s*"
        r"(?:(?P<shape>[^;]*);\s*)?(?:across the whole image|in the (?P<cells>[^.]*?))\s*\.?$"
    )
    cell = re.compile(rf"^-\s*(?P<cell>{_CELL_RE})\s*:\s*(?P<body>.*?)\s*\.?$")
    for raw in text.splitlines():
        line = _normal(raw)
        if m := item.match(line):
            cells = [c for c in re.split(r"\s*,\s*|\s+and\s+", m["cells"] or "") if c]
            classes.append(
                {
                    "class": m["cls"],
                    "percent": re.sub(r"\s*%", " %", m["pct"]),
                    "where": cells,
                    "shape": m["shape"],
                }
            )
        elif m := cell.match(line):
            grid[m["cell"]] = [
                {"class": c, "percent": re.sub(r"\s*%", " %", p)}
                for c, p in re.findall(rf"\b({_CLASS_RE})\s+({_PERCENT_RE})", m["body"])
            ]
        elif m := re.match(rf"^pixels without land-cover data\s*:\s*({_PERCENT_RE})", line):
            no_data = re.sub(r"\s*%", " %", m.group(1))
    missing = [c for c in GRID3_NAMES if c not in grid]
    if missing:
        raise ValueError(f"not a cen-layout prompt: no line for the grid cells {missing}")
    return {"classes": classes, "grid": {c: grid[c] for c in GRID3_NAMES}, "no_data": no_data}


def _user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError("no user message to caption")
    content = users[-1].get("content")
    if isinstance(content, str):
        return content
    # Multi-part content: the text parts; image parts say nothing this captioner can read.
    parts = content if isinstance(content, list) else []
    return "\n".join(
        str(p.get("text", "")) for p in parts if isinstance(p, Mapping) and p.get("type") == "text"
    )


def answer(
    messages: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any] | None,
    seed: int,
    patch_id: str,
) -> str:
    """The caption of one request: from its facts, or read back from its English.

    ``context`` is the prompt's facts when the caller has them (``chatearthnet-3.5`` shape with
    ``regions``, or ``cen-layout`` shape with ``classes``): ``messages`` are then not read. When
    it is None the statement is read back from the last user message, whose style is told by
    its first line, with the same result for a prompt of ours.
    """
    if context is not None:
        if "regions" in context:
            return caption_from_context(context, seed, patch_id)
        if "classes" in context:
            return caption_layout(context, seed, patch_id)
        raise ValueError("context has neither 'regions' (chatearthnet-3.5) nor 'classes'")
    text = _user_text(messages)
    if "land-cover layout" in _normal(text):
        return caption_layout(parse_layout_text(text), seed, patch_id)
    return caption_from_context(parse_user_text(text), seed, patch_id)
