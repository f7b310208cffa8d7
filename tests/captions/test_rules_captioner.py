"""The ``rules`` captioner: golden paragraphs, seeded variation, the instructions of the prompts
(order, dominant class, amounts by bin, theme, banned words), zero hallucination per part, and
reading statements back from prompts."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cenlib.captions import rules
from cenlib.classes import CLASS_NAMES
from cenlib.prompts import get_style
from cenlib.prompts.styles import (
    BANNED_WORDS,
    REGION_NAMES,
    ClassLayout,
    PatchContext,
    build_messages,
    cen35,
    layout,
)

Q = 128 * 128  # pixels of a quadrant, and of the middle, on a 256 x 256 patch
WATER, DEV, TREE, SHRUB, GRASS, CROP, BARE, SNOW, WETLAND, MANGROVES, MOSS = range(1, 12)

# Stems, so that "appears", "changing" or "unlikely" are caught too; then hedging words.
BANNED_RE = re.compile(
    r"possibl|likel|perhaps|context|segment|appear|chang|transition|dynamic", re.IGNORECASE
)
HEDGE_RE = re.compile(
    r"\b(may|might|could|seems?|maybe|probabl\w*|apparent\w*|suggest\w*|roughly|about)\b",
    re.IGNORECASE,
)
PROSE_RE = re.compile(
    r"\b(" + "|".join(sorted(rules.PROSE.values(), key=len, reverse=True)) + r")\b", re.IGNORECASE
)
CLASS_OF = {prose: name for name, prose in rules.PROSE.items()}
BIN_OF = {word: b for b, words in rules.AMOUNT_WORDS.items() for word in words}
AMOUNT_RE = re.compile(
    r"\ban? (?P<adj>"
    + "|".join(sorted(BIN_OF, key=len, reverse=True))
    + r") (?:"
    + "|".join(rules.AMOUNT_NOUNS)
    + r") of (?P<prose>"
    + "|".join(sorted(rules.PROSE.values(), key=len, reverse=True))
    + r")\b",
    re.IGNORECASE,
)


def counts(**by_class: int) -> np.ndarray:
    """A (12,) count vector from class names, e.g. counts(water=5, tree=3)."""
    out = np.zeros(12, np.int64)
    for name, n in by_class.items():
        out[CLASS_NAMES.index(name.replace("_", " "))] = n
    return out


def ctx_of(regions: list[np.ndarray]) -> PatchContext:
    """A context whose regions have exactly the given counts, the rest background; overall is the
    four quadrants together."""
    reg = np.stack(regions)
    px = np.maximum(reg.sum(axis=1), Q)
    reg[:, 0] += px - reg.sum(axis=1)
    return PatchContext(overall=reg[:4].sum(axis=0), regions=reg, region_pixels=px)


def town() -> PatchContext:
    """Trees around a town by a river, fields below, an empty bottom right."""
    return ctx_of(
        [
            counts(tree=12000, water=3000, developed_area=1384),
            counts(developed_area=9000, tree=5000, grass=2000, crop=384),
            counts(crop=15000, tree=1384),
            counts(),
            counts(water=8000, developed_area=6000, tree=2384),
        ]
    )


def coast() -> PatchContext:
    """Open water, mangroves along it, and a part with only a few pixels of land cover."""
    return ctx_of(
        [
            counts(water=16384),
            counts(water=10000, mangroves=6000, wetland=384),
            counts(mangroves=10),
            counts(mangroves=9000, water=7000, bare_land=384),
            counts(water=12000, mangroves=4384),
        ]
    )


def stated(ctx: PatchContext, seed: int, pid: str) -> dict[str, Any]:
    """What the captioner reads: the prompt's statement, scattered parts included."""
    info = cen35.context_json(ctx, seed, pid)
    assert info["scattered"] == rules.scattered_regions(ctx)
    return info


# --- golden paragraphs -----------------------------------------------------------------------


def test_golden_town() -> None:
    # Checked by hand against cen35.context_json: overall tree, crop, developed area, water,
    # grass; tree ranks first only in the top left. Top left 73 / 18 / 8 % (large, small, extra
    # small), top right 55 / 31 / 12 % (large, medium, small), bottom left 92 / 8 %, bottom right
    # empty, middle 49 / 37 / 15 % (medium, medium, small). Theme: tree, then crop.
    assert rules.caption(town(), 0, "town") == (
        "Of all land-cover types, tree cover takes up the most ground, ranking first in the top "
        "left part. To begin, the top left of the image contains a big share of tree cover, "
        "followed by a limited fraction of water and a minimal part of developed area. Next, the "
        "top right part is covered by a large portion of developed area, with a medium-sized "
        "amount of tree cover and a small quantity of grassland in addition. Further down, the "
        "bottom left part contains an overwhelming share of cropland, followed by an extra small "
        "fraction of tree cover. Beside it, there is no land-cover data for the bottom right of "
        "the image. In the middle part, a moderate portion of water comes first, ahead of a fair "
        "amount of developed area and a modest quantity of tree cover. Taken together, the image "
        "shows a wooded landscape with farmed fields."
    )


def test_golden_coast() -> None:
    # Water ranks first in the top left (100 %), top right (61 / 37 / 2 %) and middle (73 / 27 %);
    # the bottom left has 10 mangrove pixels, under the threshold: scattered, not "no data";
    # bottom right 55 / 43 / 2 %. Theme: water, then mangroves.
    assert rules.caption(coast(), 7, "coast") == (
        "Water is the main land cover of the image, leading in the top left, top right and middle "
        "parts. To begin, the top left of the image shows an overwhelming portion of water. Across"
        " the top, in the top right part, there is a big amount of water, along with a fair "
        "quantity of mangroves and a very small share of wetland. Below, the bottom left part "
        "holds only a few scattered pixels of land cover. Then, in the bottom right part, there is"
        " a substantial fraction of mangroves, along with a medium-sized portion of water and a "
        "tiny amount of bare land. Lastly, in the middle part, a considerable quantity of water "
        "comes first, ahead of a moderate share of mangroves. All in all, the scene is a stretch "
        "of open water with mangrove stands."
    )


def test_golden_layout() -> None:
    lab = np.full((256, 256), TREE, np.uint8)
    lab[:, 120:136] = WATER  # a river down the middle
    lab[180:, 180:] = DEV
    ctx = PatchContext.from_labels(
        lab,
        layout={
            WATER: ClassLayout(1, 1.0, 16.0, "north-south", ("top", "bottom"), 0.0),
            DEV: ClassLayout(3, 0.62, 1.3, "compact", ("bottom", "right"), 0.3),
        },
    )
    # Tree 85 % (extra large) everywhere; developed area 9 % (extra small) in the bottom right,
    # its largest component 62 % (large) of it; water 6 % in the middle column.
    assert rules.caption_layout(layout.context_json(ctx), 0, "river") == (
        "The image is dominated by tree cover, which occupies a vast amount of it across the whole"
        " image. Developed area occupies an extra small quantity of the image in the bottom right,"
        " laid out as three separate built-up areas, in a patchy layout, the largest one compact, "
        "holding a considerable share of it, touching the bottom and right edges. A very small "
        "fraction of the image is water, in the top, centre and bottom, laid out as one long, "
        "narrow body of water running north-south, touching the top and bottom edges. All in all, "
        "the scene is a forested landscape with some built-up land."
    )


# --- instructions of the prompts, on any statement -------------------------------------------

_count = st.one_of(st.sampled_from([0, 0, 0, 10, 19, 20, 21]), st.integers(0, 4000))
_region = st.lists(_count, min_size=12, max_size=12)


@st.composite
def count_contexts(draw: st.DrawFn) -> PatchContext:
    """Any counts, background included; overall is the four quadrants together."""
    regions = np.array([draw(_region) for _ in range(5)], np.int64)
    return PatchContext(
        overall=regions[:4].sum(axis=0), regions=regions, region_pixels=regions.sum(axis=1)
    )


@st.composite
def map_contexts(draw: st.DrawFn) -> PatchContext:
    """Class maps: a base class and up to five rectangles of other classes (or no data)."""
    lab = np.full((256, 256), draw(st.integers(0, 11)), np.uint8)
    for _ in range(draw(st.integers(0, 5))):
        r0, c0 = draw(st.integers(0, 255)), draw(st.integers(0, 255))
        h, w = draw(st.integers(1, 200)), draw(st.integers(1, 200))
        lab[r0 : r0 + h, c0 : c0 + w] = draw(st.integers(0, 11))
    return PatchContext.from_labels(lab, keep_labels=False)


contexts = st.one_of(count_contexts(), map_contexts())
seeds = st.integers(0, 2**40)
ids = st.text(max_size=12)


def split(text: str) -> list[str]:
    """Sentences of a paragraph (no sentence of the captioner has an inner period)."""
    assert text.endswith(".")
    return [s + "." for s in text[:-1].split(". ")]


def named(sentence: str) -> list[str]:
    """Classes named in a sentence, in order."""
    return [CLASS_OF[m.lower()] for m in PROSE_RE.findall(sentence)]


def check_clean(text: str) -> None:
    assert not BANNED_RE.search(text), text
    assert not HEDGE_RE.search(text), text
    assert "\n" not in text and "  " not in text  # one paragraph of plain prose
    assert not re.search(r"\d", text)  # amounts in words, as the prompts ask


def check_statement_caption(info: dict[str, Any], seed: int, pid: str) -> None:
    parts = rules.sentences(info, seed, pid)
    text = rules.caption_from_context(info, seed, pid)
    assert text == " ".join(s for _, s in parts)
    assert split(text) == [s for _, s in parts]
    check_clean(text)
    overall = info["overall"]
    slots = [slot for slot, _ in parts]
    # Spatial order: the opening, the five parts in the prompt's order, then the theme.
    assert slots[-6:] == [*REGION_NAMES, "theme"]
    assert slots[:-6] in (["opening"], [])
    by_slot = dict(parts)
    for name in REGION_NAMES:
        items = info["regions"][name]
        sentence = by_slot[name]
        assert name in sentence
        # Zero hallucination: the classes named are the part's own, in the order given (largest
        # area first), and each amount word belongs to the bin the prompt stated.
        assert named(sentence) == [it["class"] for it in items], sentence
        found = [
            (BIN_OF[m["adj"].lower()], CLASS_OF[m["prose"].lower()])
            for m in AMOUNT_RE.finditer(sentence)
        ]
        assert found == [(it["bin"], it["class"]) for it in items], sentence
        if not items:
            scattered = name in info.get("scattered", [])
            assert ("scattered" in sentence) == scattered, sentence
            assert ("no land-cover data" in sentence) != scattered, sentence
    theme = by_slot["theme"]
    if overall:
        # The dominant class is the first class the paragraph names, with where it leads.
        assert named(text)[0] == overall[0]
        assert named(by_slot["opening"]) == [overall[0]]
        leads = [
            r for r in REGION_NAMES if [it["class"] for it in info["regions"][r][:1]] == overall[:1]
        ]
        for r in leads:
            assert r in by_slot["opening"] or "in all five parts" in by_slot["opening"]
        assert any(theme.startswith(o.split("{")[0]) for o in rules.THEME_OPENERS), theme
        assert any(b in theme for b in rules.THEME_BASE[overall[0]]), theme
        if len(overall) > 1:
            assert any(f" with {w}." in theme for w in rules.THEME_WITH[overall[1]]), theme
        else:
            assert theme.endswith(rules.THEME_ALONE + ".")
    else:
        assert theme == rules.THEME_EMPTY


@settings(max_examples=150, deadline=None)
@given(contexts, seeds, ids)
def test_captions_follow_the_instructions(ctx: PatchContext, seed: int, pid: str) -> None:
    info = stated(ctx, seed, pid)
    check_statement_caption(info, seed, pid)
    text = rules.caption(ctx, seed, pid)
    assert text == rules.caption_from_context(info, seed, pid)
    assert text == rules.caption(ctx, seed, pid)  # deterministic


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(CLASS_NAMES[1:]), min_size=1, max_size=3, unique=True),
    st.lists(st.sampled_from([b for _, b in cen35.BINS]), min_size=3, max_size=3),
    seeds,
    ids,
)
def test_statements_without_counts(
    classes: list[str], bins: list[str], seed: int, pid: str
) -> None:
    """Hand-made statements: any bin order, percent omitted, every class possible first."""
    items = [{"class": c, "bin": b} for c, b in zip(classes, bins, strict=False)]
    info = {
        "overall": classes,
        "regions": {name: items[i % 2 :] for i, name in enumerate(REGION_NAMES)},
    }
    check_statement_caption(info, seed, pid)


def test_same_inputs_same_text_and_variation() -> None:
    ctx = town()
    texts = {rules.caption(ctx, seed, pid) for seed in range(6) for pid in ("a", "b", "c", "d")}
    assert len(texts) == 24  # every (seed, id) reads differently
    assert rules.caption(ctx, 3, "b") == rules.caption(town(), 3, "b")
    # Each slot uses several of its wordings across patches.
    openings = {rules.sentences(stated(ctx, 0, str(i)), 0, str(i))[0][1] for i in range(40)}
    assert len(openings) >= 3
    adjectives = {
        m["adj"] for i in range(40) for m in AMOUNT_RE.finditer(rules.caption(ctx, 0, str(i)))
    }
    assert {"large", "big", "substantial", "considerable"} <= adjectives


def test_amounts_vary_within_a_paragraph() -> None:
    for i in range(30):
        phrases = [
            m.group(0).rsplit(" of ", 1)[0]
            for m in AMOUNT_RE.finditer(rules.caption(town(), 0, str(i)))
        ]
        assert len(phrases) == 11
        assert len(set(phrases)) == len(phrases)  # no amount phrase repeated


def test_plural_class_agrees_with_its_verbs() -> None:
    ctx = ctx_of([counts(mangroves=16000, water=384)] * 4 + [counts(mangroves=16384)])
    openings = {rules.caption(ctx, 0, str(i)).split(". ")[0] for i in range(40)}
    assert len(openings) == 4
    for opening in openings:
        assert not re.search(r"mangroves (is|leads|occupies|takes)\b", opening, re.I), opening
        assert "in all five parts" in opening
    assert any(o.startswith("Mangroves are ") for o in openings)
    assert any(" which lead " in o for o in openings)
    theme = rules.caption(ctx, 0, "x").rsplit(". ", 1)[1]
    assert any(b in theme for b in rules.THEME_BASE["mangroves"]), theme


def test_empty_image() -> None:
    ctx = ctx_of([counts()] * 5)
    text = rules.caption(ctx, 0, "empty")
    assert text.startswith("The image has no land-cover data. ")
    assert text.count("no land-cover data") == 6
    assert text.endswith(rules.THEME_EMPTY)


def test_tables() -> None:
    assert set(rules.AMOUNT_WORDS) == {b for _, b in cen35.BINS}
    words = [w for ws in rules.AMOUNT_WORDS.values() for w in ws]
    assert len(words) == len(set(words))  # each amount word names one bin
    for b, ws in rules.AMOUNT_WORDS.items():
        assert ws[0] == b  # the bin's own words come first
    for name in CLASS_NAMES[1:]:
        assert rules.PROSE[name].startswith(name)
        assert rules.THEME_BASE[name] and rules.THEME_WITH[name]
    every = [
        *rules.PROSE.values(),
        *words,
        *rules.AMOUNT_NOUNS,
        *(p for ps in rules.THEME_BASE.values() for p in ps),
        *(p for ps in rules.THEME_WITH.values() for p in ps),
        *rules.THEME_OPENERS,
        rules.THEME_ALONE,
        rules.THEME_EMPTY,
    ]
    for phrase in every:
        assert not BANNED_RE.search(phrase) and not HEDGE_RE.search(phrase), phrase
    assert all(BANNED_RE.search(w) for w in BANNED_WORDS)  # the stems cover the list


def test_bad_statements() -> None:
    with pytest.raises(ValueError, match="regions"):
        rules.caption_from_context({"overall": ["tree"], "regions": {}}, 0, "x")
    bad_bin = {
        "overall": [],
        "regions": {r: [{"class": "tree", "bin": "huge"}] for r in REGION_NAMES},
    }
    with pytest.raises(ValueError, match="bin"):
        rules.caption_from_context(bad_bin, 0, "x")
    with pytest.raises(ValueError, match="class"):
        rules.caption_from_context(
            {"overall": ["forest"], "regions": {r: [] for r in REGION_NAMES}}, 0, "x"
        )
    # A percent alone is enough: the bin is the prompt's.
    by_percent = {
        "overall": ["tree"],
        "regions": {r: [{"class": "tree", "percent": 85}] for r in REGION_NAMES},
    }
    assert "an extra large" in rules.caption_from_context(by_percent, 0, "x").lower()


# --- reading statements back from prompts ----------------------------------------------------


def without_percent(info: dict[str, Any]) -> dict[str, Any]:
    return {
        "overall": info["overall"],
        "regions": {
            r: [{"class": it["class"], "bin": it["bin"]} for it in items]
            for r, items in info["regions"].items()
        },
    }


def mangle(text: str) -> str:
    """What a relay might do to a prompt: case, line endings, spacing, final periods."""
    lines = [line.upper() if i % 2 else line for i, line in enumerate(text.split("\n"))]
    return "\r\n".join(re.sub(r"\.$", "", line).replace(" ", "  ") for line in lines) + "\n\n"


@settings(max_examples=100, deadline=None)
@given(contexts, seeds, ids)
def test_parse_user_text_round_trip(ctx: PatchContext, seed: int, pid: str) -> None:
    text = cen35.user_text(ctx, seed, pid)
    parsed = rules.parse_user_text(text)
    # The user message states bins, not percents: the statement minus its percents comes back.
    stated_back = without_percent(cen35.context_json(ctx, seed, pid))
    assert parsed == {**stated_back, "scattered": rules.scattered_regions(ctx)}
    assert rules.parse_user_text(mangle(text)) == parsed
    # Served as an endpoint, the captioner writes the same paragraph from the prompt alone.
    messages = build_messages("chatearthnet-3.5", ctx, seed, pid)
    assert rules.answer(messages, None, seed, pid) == rules.caption(ctx, seed, pid)
    info = cen35.context_json(ctx, seed, pid)
    assert rules.answer(messages, info, seed, pid) == rules.caption_from_context(info, seed, pid)


_layout = st.builds(
    ClassLayout,
    components=st.integers(0, 60),
    largest_share=st.floats(0, 1),
    elongation=st.floats(1, 20),
    orientation=st.sampled_from(["north-south", "east-west", "compact"]),
    edges=st.lists(st.sampled_from(["top", "bottom", "left", "right"]), unique=True).map(tuple),
    fragmentation=st.floats(0, 1),
)


@st.composite
def grid_contexts(draw: st.DrawFn) -> PatchContext:
    regions = np.array([draw(_region) for _ in range(5)], np.int64)
    grid3 = np.array([draw(_region) for _ in range(9)], np.int64)
    return PatchContext(
        overall=grid3.sum(axis=0),
        regions=regions,
        region_pixels=regions.sum(axis=1),
        grid3=grid3,
        layout=draw(st.dictionaries(st.integers(1, 11), _layout, max_size=4)),
    )


@settings(max_examples=80, deadline=None)
@given(grid_contexts(), seeds, ids)
def test_layout_captions_and_round_trip(ctx: PatchContext, seed: int, pid: str) -> None:
    info = layout.context_json(ctx)
    text = layout.user_text(ctx)
    assert rules.parse_layout_text(text) == info
    assert rules.parse_layout_text(mangle(text)) == info
    caption = rules.caption_layout(info, seed, pid)
    assert caption == rules.caption_layout(info, seed, pid)
    assert rules.answer(build_messages("cen-layout", ctx, seed, pid), None, seed, pid) == caption
    assert not BANNED_RE.search(caption) and not HEDGE_RE.search(caption), caption
    assert "%" not in caption and "\n" not in caption
    parts = rules.layout_sentences(info, seed, pid)
    classes = [c["class"] for c in info["classes"]]
    # Largest first, one sentence each, the amount word matching the class's share of the image.
    assert [slot for slot, _ in parts if slot in rules.PROSE] == classes
    for slot, sentence in parts:
        if slot in rules.PROSE:
            assert named(sentence.split(", forming")[0].split(", laid out")[0]) == [slot]
            pct = next(c["percent"] for c in info["classes"] if c["class"] == slot)
            first = re.search(
                r"\ban? (" + "|".join(sorted(BIN_OF, key=len, reverse=True)) + r") ", sentence, re.I
            )
            assert first is not None
            n = 0 if "under" in pct else int(pct.split()[0])
            assert BIN_OF[first.group(1).lower()] == cen35.percent_bin(n), sentence
    assert parts[-1][0] == "theme"
    if classes:
        assert named(caption)[0] == classes[0]


def test_parse_errors_and_answer_inputs() -> None:
    with pytest.raises(ValueError, match="whole image"):
        rules.parse_user_text("Describe this picture.")
    text = cen35.user_text(town(), 0, "t")
    with pytest.raises(ValueError, match="middle"):
        rules.parse_user_text(text.rsplit("\n", 1)[0])
    with pytest.raises(ValueError, match="top right"):
        rules.parse_user_text(text.replace("grass (small", "forest (small"))
    with pytest.raises(ValueError, match="grid cells"):
        rules.parse_layout_text("Describe the satellite image with this land-cover layout.")
    with pytest.raises(ValueError, match="user message"):
        rules.answer([{"role": "system", "content": "x"}], None, 0, "t")
    with pytest.raises(ValueError, match="neither"):
        rules.answer([], {"foo": 1}, 0, "t")
    # Content as a list of parts, the way image styles send it: the text parts are read.
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert rules.answer([{"role": "user", "content": parts}], None, 0, "t") == rules.caption(
        town(), 0, "t"
    )


# --- facts, not English ----------------------------------------------------------------------


def _demo_like(seed: int, n: int) -> list[PatchContext]:
    """Blocky class maps like the demo's, with their layout as the analysis stage finds it."""
    from caption_support import label_maps

    from cenlib.analysis import layout as measure_layout
    from cenlib.analysis import patch_layout

    maps = label_maps(n, seed)
    lays = measure_layout(maps)
    out = []
    for i in range(n):
        per = {
            CLASS_NAMES.index(k): ClassLayout.from_dict(v) for k, v in patch_layout(lays[i]).items()
        }
        out.append(PatchContext.from_labels(maps[i], layout=per, keep_labels=False))
    return out


def _sent(style: str, ctx: PatchContext, seed: int, pid: str) -> tuple[list[Any], Any]:
    """Messages and facts of one patch as the caption stage gets them (through JSON)."""
    s = get_style(style)
    rec = {"facts": s.describe(ctx, seed, pid), "messages": s.build(ctx, seed, pid)}
    back = json.loads(json.dumps(rec))
    return back["messages"], back["facts"]


@pytest.mark.parametrize("style", ["chatearthnet-3.5", "cen-layout"])
def test_facts_give_the_caption_parsing_gives_on_demo_like_patches(style: str) -> None:
    for i, ctx in enumerate(_demo_like(5, 60)):
        pid = f"{4242 + i}_2817_patch{i % 2}{i // 2 % 2}"
        messages, facts = _sent(style, ctx, i % 3, pid)
        assert rules.answer(messages, facts, i % 3, pid) == rules.answer(messages, None, i % 3, pid)


@settings(max_examples=120, deadline=None)
@given(st.one_of(grid_contexts(), map_contexts()), seeds, ids)
def test_facts_give_the_caption_parsing_gives(ctx: PatchContext, seed: int, pid: str) -> None:
    """Any counts (threshold edges, scattered parts, empty images, any layout): the caption from
    a prompt record's facts is the one a reader of its English writes, for both text styles."""
    for style in ("chatearthnet-3.5", "cen-layout"):
        messages, facts = _sent(style, ctx, seed, pid)
        from_facts = rules.answer(messages, facts, seed, pid)
        assert from_facts == rules.answer(messages, None, seed, pid), style
        if style == "chatearthnet-3.5":
            assert from_facts == rules.caption(ctx, seed, pid)


@pytest.mark.parametrize(
    ("style", "phrase", "reworded", "parser"),
    [
        ("chatearthnet-3.5", "Land-cover types over the whole", "Classes in the whole", "fails"),
        ("chatearthnet-3.5", "mainly contains", "is mostly", "same"),
        ("cen-layout", "Grid cells, each with", "Cells of a 3 x 3 grid with", "same"),
        ("cen-layout", "of the image:", "of the scene -", "differs"),
    ],
)  # fmt: skip
def test_rewording_the_prompt_does_not_change_the_facts_caption(
    style: str, phrase: str, reworded: str, parser: str
) -> None:
    """The captioner reads the facts, never the English: a prompt worded anew (a new style
    version) captions the same, whatever the parser makes of the new words."""
    ctx = _demo_like(2, 1)[0]
    messages, facts = _sent(style, ctx, 0, "p")
    user = messages[-1]["content"]
    assert phrase in user
    changed = [*messages[:-1], {**messages[-1], "content": user.replace(phrase, reworded)}]
    assert rules.answer(changed, facts, 0, "p") == rules.answer(messages, facts, 0, "p")
    try:
        parsed = rules.answer(changed, None, 0, "p")
    except ValueError:
        parsed = None
    expected = rules.answer(messages, None, 0, "p")
    assert {"fails": parsed is None, "same": parsed == expected, "differs": parsed != expected}[
        parser
    ]


def test_rules_backend_passes_the_facts_and_refuses_several_patches() -> None:
    import asyncio

    from cenlib.captions.backends import Fault, RulesBackend
    from cenlib.config import EndpointConfig

    backend = RulesBackend(EndpointConfig(kind="rules"))
    ctx = town()
    messages, facts = _sent("chatearthnet-3.5", ctx, 3, "t")
    garbled = [*messages[:-1], {"role": "user", "content": "Describe the image."}]

    def run(msgs: list[Any], f: Any) -> str:
        return asyncio.run(backend.complete(msgs, {}, seed=3, patch_id="t", facts=f)).content

    assert run(garbled, facts) == run(messages, None) == rules.caption(ctx, 3, "t")
    assert run(garbled, [facts]) == rules.caption(ctx, 3, "t")  # a batch of one
    with pytest.raises(Fault, match="one patch per request"):
        run(messages, [facts, facts])
    with pytest.raises(Fault, match="cannot read this prompt"):
        run(garbled, None)
