"""Prompt styles: golden prompts worked out by hand, seeded nouns, banned words, 4v images and
answer splitting, and the left-right symmetry of the ChatEarthNet regions."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cenlib.prompts.cen4v import build_batch_messages, split_answer
from cenlib.prompts.styles import (
    BANNED_WORDS,
    STYLES,
    ClassLayout,
    PatchContext,
    build_messages,
    cen4v,
    cen35,
    context_json,
    get_style,
    layout,
    patch_seed,
    preview,
)

Q = 128 * 128  # pixels of a quadrant, and of the middle, on a 256 x 256 patch
WATER, DEV, TREE, SHRUB, GRASS, CROP, BARE, SNOW, WETLAND, MANGROVES, MOSS = range(1, 12)


def counts(**by_class: int) -> np.ndarray:
    """A (12,) count vector from class names, e.g. counts(water=5, tree=3)."""
    idx = {
        "bg": 0,
        "water": WATER,
        "dev": DEV,
        "tree": TREE,
        "shrub": SHRUB,
        "grass": GRASS,
        "crop": CROP,
        "bare": BARE,
        "snow": SNOW,
        "wetland": WETLAND,
        "mangroves": MANGROVES,
        "moss": MOSS,
    }
    out = np.zeros(12, np.int64)
    for name, n in by_class.items():
        out[idx[name]] = n
    return out


def ctx_of(regions: list[np.ndarray], overall: np.ndarray | None = None) -> PatchContext:
    """A context whose regions have exactly the given counts (the rest of each is background)."""
    reg = np.stack(regions)
    px = np.maximum(reg.sum(axis=1), Q)
    reg[:, 0] += px - reg.sum(axis=1)
    if overall is None:
        overall = reg[:4].sum(axis=0)
    return PatchContext(overall=overall, regions=reg, region_pixels=px)


def user(messages: list[dict[str, Any]]) -> str:
    content = messages[1]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def nouns_by_hand(seed: int, patch_id: str) -> np.ndarray:
    """The documented rule, re-derived: bytes of sha256("seed NUL id NUL block"), 255 skipped."""
    stream: list[int] = []
    block = 0
    while len(stream) < 15:
        digest = hashlib.sha256(f"{seed}\x00{patch_id}\x00{block}".encode()).digest()
        stream += [b % 5 for b in digest if b != 255]
        block += 1
    return np.array(cen35.NOUNS)[np.array(stream[:15]).reshape(5, 3)]


# --- chatearthnet-3.5: golden prompts -------------------------------------------------------


def town_map() -> np.ndarray:
    """Left half water, right half tree, a 30 x 50 town in the top-left quadrant, off the middle."""
    lab = np.full((256, 256), TREE, np.uint8)
    lab[:, :128] = WATER
    lab[10:40, 10:60] = DEV
    return lab


def test_golden_town_counts_by_hand_match_from_labels() -> None:
    town = 30 * 50
    by_hand = ctx_of(
        [
            counts(water=Q - town, dev=town),
            counts(tree=Q),
            counts(water=Q),
            counts(tree=Q),
            counts(water=Q // 2, tree=Q // 2),
        ]
    )
    assert by_hand.overall.tolist() == counts(water=2 * Q - town, dev=town, tree=2 * Q).tolist()
    from_map = PatchContext.from_labels(town_map())
    assert from_map.overall.tolist() == by_hand.overall.tolist()
    assert from_map.regions.tolist() == by_hand.regions.tolist()
    assert from_map.region_pixels.tolist() == [Q] * 5


def test_golden_town_prompt() -> None:
    ctx = PatchContext.from_labels(town_map())
    # Top left: water 14884/16384 = 0.908 -> 0.91 -> 91; town 1500/16384 = 0.0916 -> 0.09 -> 9,
    # the last "extra small" percent. Middle: a tie at 50 % each, water (index 1) before tree (3).
    # Overall: tree 32768 > water 31268 > developed area 1500.
    assert context_json(ctx, 7, "4242_2817_patch00") == {
        "overall": ["tree", "water", "developed area"],
        "regions": {
            "top left": [
                {"class": "water", "percent": 91, "bin": "extra large"},
                {"class": "developed area", "percent": 9, "bin": "extra small"},
            ],
            "top right": [{"class": "tree", "percent": 100, "bin": "extra large"}],
            "bottom left": [{"class": "water", "percent": 100, "bin": "extra large"}],
            "bottom right": [{"class": "tree", "percent": 100, "bin": "extra large"}],
            "middle": [
                {"class": "water", "percent": 50, "bin": "large"},
                {"class": "tree", "percent": 50, "bin": "large"},
            ],
        },
        "scattered": [],
    }
    n = nouns_by_hand(7, "4242_2817_patch00")
    expected = "\n".join(
        [
            "Describe the satellite image summarised by these land-cover statistics.",
            "Land-cover types over the whole image, from most to least: "
            "tree, water, developed area.",
            "The top left part mainly contains, from the largest area to the smallest: "
            f"water (extra large {n[0, 0]}) and developed area (extra small {n[0, 1]}).",
            f"The top right part mainly contains tree (extra large {n[1, 0]}).",
            f"The bottom left part mainly contains water (extra large {n[2, 0]}).",
            f"The bottom right part mainly contains tree (extra large {n[3, 0]}).",
            "The middle part mainly contains, from the largest area to the smallest: "
            f"water (large {n[4, 0]}) and tree (large {n[4, 1]}).",
        ]
    )
    messages = build_messages("chatearthnet-3.5", ctx, 7, "4242_2817_patch00")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == cen35.SYSTEM
    assert user(messages) == expected
    # Pinned once, so that a change of hash or of numpy's generator stream is noticed.
    assert patch_seed(7, "4242_2817_patch00") == int.from_bytes(
        hashlib.sha256(b"7\x004242_2817_patch00").digest()[:8], "little"
    )
    assert n[:, 0].tolist() == ["quantity", "portion", "part", "portion", "part"]
    assert n[4, 1] == "fraction"


def test_golden_bins_truncation_threshold_and_empty_region() -> None:
    ctx = ctx_of(
        [
            # 1000 land pixels: 790 -> 79 (large), 100 -> 10 (small), 90 -> 9 (extra small); the
            # 4th class (grass, 20) is dropped from the top 3 but stays in the denominator.
            counts(water=790, tree=100, crop=90, grass=20),
            # 800 -> 80 (extra large), 190 -> 19 (small); grass with 10 < 20 pixels is not named.
            counts(water=800, tree=190, grass=10),
            # 290/1000 = 0.29 -> int(0.29 * 100) = int(28.999999999999996) = 28 (medium).
            counts(tree=500, crop=290, water=210),
            counts(),  # all background
            # 19 water pixels stay unnamed; 20 tree pixels are named: 20/39 = 0.513 -> 51 (large).
            counts(water=19, tree=20),
        ],
        overall=counts(tree=5000, snow=19, moss=20),
    )
    got = context_json(ctx, 0, "p")
    assert got["overall"] == ["tree", "moss"]  # snow has 19 pixels, moss 20
    assert got["regions"] == {
        "top left": [
            {"class": "water", "percent": 79, "bin": "large"},
            {"class": "tree", "percent": 10, "bin": "small"},
            {"class": "crop", "percent": 9, "bin": "extra small"},
        ],
        "top right": [
            {"class": "water", "percent": 80, "bin": "extra large"},
            {"class": "tree", "percent": 19, "bin": "small"},
        ],
        "bottom left": [
            {"class": "tree", "percent": 50, "bin": "large"},
            {"class": "crop", "percent": 28, "bin": "medium"},
            {"class": "water", "percent": 21, "bin": "medium"},
        ],
        "bottom right": [],
        "middle": [{"class": "tree", "percent": 51, "bin": "large"}],
    }
    lines = user(build_messages("chatearthnet-3.5", ctx, 0, "p")).splitlines()
    assert lines[5] == "The bottom right part has no land-cover data."
    assert lines[6].startswith("The middle part mainly contains tree (large ")


@pytest.mark.parametrize(
    ("percent", "name"),
    [
        *[(0, "extra small"), (9, "extra small"), (10, "small"), (19, "small"), (20, "medium")],
        *[(49, "medium"), (50, "large"), (79, "large"), (80, "extra large"), (100, "extra large")],
    ],
)
def test_bin_edges(percent: int, name: str) -> None:
    assert cen35.percent_bin(percent) == name


@pytest.mark.parametrize("bad", [-1, 101])
def test_bin_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        cen35.percent_bin(bad)


def test_percent_rounds_as_numpy_did_in_the_reference() -> None:
    # The reference's p was a numpy float64: round() halves to even on p * 100. 50/10000 = 0.005
    # gives 0 there (Python's round(0.005, 2) would give 0.01), 150/10000 gives 2 (Python: 1).
    assert cen35.reference_percent(50, 10_000) == 0
    assert cen35.reference_percent(150, 10_000) == 2
    assert cen35.reference_percent(29, 100) == 28
    for total in (39, 1000, 10_000, 12_345, Q):
        for k in range(0, total + 1, max(1, total // 997)):
            assert cen35.reference_percent(k, total) == int(
                round(np.float64(k) / float(total), 2) * 100
            )


def test_traces_only_and_no_data_at_all() -> None:
    ctx = ctx_of([counts(water=5), counts(), counts(), counts(), counts()])
    assert context_json(ctx, 0, "p")["overall"] == []
    lines = user(build_messages("chatearthnet-3.5", ctx, 0, "p")).splitlines()
    assert lines[1] == "The image as a whole has no land-cover data."
    assert lines[2] == "The top left part holds only a few scattered pixels of land cover."
    assert lines[3] == "The top right part has no land-cover data."


def test_ties_ordered_by_class_index() -> None:
    # Four classes of 100 pixels: the three lowest indices are kept, in index order.
    ctx = ctx_of([counts(moss=100, crop=100, water=100, tree=100)] + [counts()] * 4)
    got = context_json(ctx, 0, "p")
    assert [i["class"] for i in got["regions"]["top left"]] == ["water", "tree", "crop"]
    assert got["overall"] == ["water", "tree", "crop", "moss"]


# --- seeded nouns ----------------------------------------------------------------------------

_NOUN_RE = re.compile(r"\((?:extra small|small|medium|large|extra large) (\w+)\)")


def test_nouns_seeded_per_patch() -> None:
    ctx = PatchContext.from_labels(town_map())
    a = build_messages("chatearthnet-3.5", ctx, 3, "10_20_patch01")
    assert a == build_messages("chatearthnet-3.5", ctx, 3, "10_20_patch01")
    texts = {user(build_messages("chatearthnet-3.5", ctx, s, "10_20_patch01")) for s in range(20)}
    texts |= {user(build_messages("chatearthnet-3.5", ctx, 3, f"10_20_patch{i}")) for i in range(9)}
    assert len(texts) > 10
    for t in texts:
        found = _NOUN_RE.findall(t)
        assert len(found) == 7
        assert set(found) <= set(cen35.NOUNS)


def test_patch_seed_is_stable_and_separates_ids() -> None:
    assert patch_seed(0, "a") == patch_seed(0, "a")
    assert len({patch_seed(s, i) for s in range(5) for i in ("a", "b", "ab", "")}) == 20
    assert patch_seed(1, "2") != patch_seed(12, "")  # no ambiguity from concatenation


# --- all styles ------------------------------------------------------------------------------

_count = st.one_of(st.sampled_from([0, 0, 0, 19, 20, 21]), st.integers(0, 4000))
_region = st.lists(_count, min_size=12, max_size=12)
_orientation = st.sampled_from(["north-south", "east-west", "compact"])
_layout = st.builds(
    ClassLayout,
    components=st.integers(0, 60),
    largest_share=st.floats(0, 1),
    elongation=st.floats(1, 20),
    orientation=_orientation,
    edges=st.lists(st.sampled_from(["top", "bottom", "left", "right"]), unique=True).map(tuple),
    fragmentation=st.floats(0, 1),
)


@st.composite
def contexts(draw: st.DrawFn) -> PatchContext:
    regions = np.array([draw(_region) for _ in range(5)], np.int64)
    grid3 = np.array([draw(_region) for _ in range(9)], np.int64)
    lay = draw(st.dictionaries(st.integers(1, 11), _layout, max_size=4))
    return PatchContext(
        overall=regions[:4].sum(axis=0),
        regions=regions,
        region_pixels=regions.sum(axis=1),
        grid3=grid3,
        layout=lay,
        labels=np.zeros((4, 4), np.uint8),  # the 4v image is checked elsewhere
    )


def all_text(messages: list[dict[str, Any]]) -> str:
    out = []
    for m in messages:
        parts = m["content"] if isinstance(m["content"], list) else [m["content"]]
        out += [p if isinstance(p, str) else p.get("text", "") for p in parts]
    return "\n".join(out)


# Stems, so that "appears", "changing" or "unlikely" are caught too.
_BANNED_RE = re.compile(
    r"possibl|likel|perhaps|context|segment|appear|chang|transition|dynamic", re.IGNORECASE
)


@settings(max_examples=60, deadline=None)
@given(contexts(), st.integers(0, 2**40), st.text(max_size=12))
def test_no_banned_word_in_any_style(ctx: PatchContext, seed: int, pid: str) -> None:
    listing = ", ".join(BANNED_WORDS)
    for style in STYLES:
        messages = build_messages(style, ctx, seed, pid)
        assert messages == build_messages(style, ctx, seed, pid)  # deterministic
        text = all_text(messages)
        # The system message names the words once, to forbid them; nothing else may use them.
        assert text.count(listing) == 1
        assert not _BANNED_RE.search(text.replace(listing, "")), style


def test_style_registry_and_versions() -> None:
    assert set(STYLES) == {"chatearthnet-3.5", "chatearthnet-4v", "cen-layout"}
    assert get_style("chatearthnet-3.5@1").versioned == "chatearthnet-3.5@1"
    assert get_style("cen-layout").versioned == "cen-layout@1"
    assert get_style("chatearthnet-4v").max_batch == 4
    with pytest.raises(KeyError, match=r"only chatearthnet-3\.5@1"):
        get_style("chatearthnet-3.5@2")
    with pytest.raises(KeyError, match=r"known: chatearthnet-3\.5"):
        get_style("gpt-5")


def test_scattered_parts_are_stated() -> None:
    """A part with land cover but no class at the threshold: the prompt says "a few scattered
    pixels", and the statement names the part, so a caption from the JSON can say it too."""
    regions = np.stack([counts(tree=Q)] * 4 + [counts(water=10, bg=Q - 10)])
    ctx = PatchContext(overall=regions[:4].sum(axis=0), regions=regions, region_pixels=[Q] * 5)
    got = context_json(ctx, 0, "p")
    assert got["regions"]["middle"] == [] and got["scattered"] == ["middle"]
    assert "The middle part holds only a few scattered pixels" in cen35.user_text(ctx, 0, "p")
    assert context_json(PatchContext.from_labels(town_map()), 0, "p")["scattered"] == []


def test_registry_builds_batches_and_splits_answers() -> None:
    v4 = get_style("chatearthnet-4v")
    assert v4.build_batch is build_batch_messages and v4.split_answer is split_answer
    for name in ("chatearthnet-3.5", "cen-layout"):
        single = get_style(name)
        assert single.build_batch is None and single.max_batch == 1
        assert single.split_answer(" A lake. \n", 1) == ["A lake."]
        assert single.split_answer("A lake.", 2) is None and single.split_answer(" ", 1) is None


def test_preview_adds_messages_to_the_json() -> None:
    ctx = PatchContext.from_labels(town_map())
    got = preview("chatearthnet-3.5", ctx, 1, "x")
    assert list(got) == ["overall", "regions", "scattered", "messages"]
    assert got["messages"] == build_messages("chatearthnet-3.5", ctx, 1, "x")
    assert {"coverage", "shares", "messages"} <= set(preview("chatearthnet-4v", ctx, 1, "x"))
    assert {"classes", "grid", "messages"} <= set(preview("cen-layout", ctx, 1, "x"))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("overall", np.zeros(11, np.int64), "shape"),
        ("regions", np.zeros((4, 12), np.int64), "shape"),
        ("overall", np.zeros(12, np.float64), "integer"),
        ("overall", -np.ones(12, np.int64), "negative"),
        ("region_pixels", np.ones(5, np.int64), "more pixels"),
    ],
)
def test_context_validation(field: str, value: np.ndarray, match: str) -> None:
    kw: dict[str, Any] = {
        "overall": np.zeros(12, np.int64),
        "regions": np.full((5, 12), 2, np.int64),
        "region_pixels": np.full(5, Q, np.int64),
    }
    kw[field] = value
    with pytest.raises(ValueError, match=match):
        PatchContext(**kw)


# --- left-right symmetry ---------------------------------------------------------------------

_FLIP = [1, 0, 3, 2, 4]  # top left <-> top right, bottom left <-> bottom right, middle stays


def _swapped(j: dict[str, Any]) -> dict[str, Any]:
    r = j["regions"]
    names = list(r)
    scattered = {names[_FLIP[names.index(n)]] for n in j["scattered"]}
    return {
        "overall": j["overall"],
        "regions": {names[i]: r[names[k]] for i, k in enumerate(_FLIP)},
        "scattered": [n for n in names if n in scattered],
    }


@settings(max_examples=60, deadline=None)
@given(contexts())
def test_flip_swaps_regions_in_counts(ctx: PatchContext) -> None:
    flipped = PatchContext(
        overall=ctx.overall, regions=ctx.regions[_FLIP], region_pixels=ctx.region_pixels[_FLIP]
    )
    assert context_json(flipped, 0, "p") == _swapped(context_json(ctx, 0, "p"))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 64))
def test_flip_swaps_regions_on_maps(seed: int, block: int) -> None:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 12, size=(256 // block + 1,) * 2, dtype=np.uint8)
    lab = np.kron(small, np.ones((block, block), np.uint8))[:256, :256]
    a = context_json(PatchContext.from_labels(lab), 0, "p")
    b = context_json(PatchContext.from_labels(np.fliplr(lab).copy()), 0, "p")
    assert b == _swapped(a)


# --- chatearthnet-4v -------------------------------------------------------------------------


def _decode(part: dict[str, Any]) -> np.ndarray:
    url = part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_4v_png_is_the_map_in_chatearthnet_colours() -> None:
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 12, (256, 256), dtype=np.uint8)
    rgb = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    messages = build_messages("chatearthnet-4v", PatchContext.from_labels(lab, rgb=rgb), 0, "p")
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    img = _decode(parts[1])
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert (img == cen4v.palette_rgb()[lab[::2, ::2]]).all()
    assert {tuple(c) for c in img.reshape(-1, 3)} <= {tuple(c) for c in cen4v.palette_rgb()}
    assert (_decode(parts[2]) == rgb).all()
    assert tuple(cen4v.palette_rgb()[WATER]) == (0, 0, 255)


def test_4v_numbers_by_hand() -> None:
    ctx = PatchContext.from_labels(town_map())
    text = user(build_messages("chatearthnet-4v", ctx, 0, "p"))
    # developed area: 1500 of the 16384 top-left pixels = 9.155 %; shares to two decimals.
    assert (
        "developed area: top left part 9.16%, top right part 0.00%, bottom left part 0.00%, "
        "bottom right part 0.00%, middle part 0.00%"
    ) in text
    assert "top left part: water 0.91, developed area 0.09" in text
    assert "middle part: water 0.50, tree 0.50" in text
    assert text.index("\ntree: ") < text.index("\nwater: ") < text.index("\ndeveloped area: ")


@settings(max_examples=60, deadline=None)
@given(contexts())
def test_4v_coverage_per_region_at_most_one(ctx: PatchContext) -> None:
    cov = cen4v.coverage(ctx)
    for r in ("top left", "top right", "bottom left", "bottom right", "middle"):
        assert sum(v[r] for v in cov.values()) <= 1 + 1e-9
        assert sum(v for _, v in cen4v.shares(ctx)[r]) <= 1 + 1e-9


def test_4v_batch_of_four_and_limits() -> None:
    ctxs = [PatchContext.from_labels(np.full((256, 256), c, np.uint8)) for c in (1, 3, 5, 6)]
    messages = build_batch_messages(ctxs)
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["text"] + ["image_url"] * 4
    for k in range(1, 5):
        assert f"Image {k}: share of each part" in parts[0]["text"]
    assert "four images" in parts[0]["text"]
    with pytest.raises(ValueError, match="1 to 4 patches"):
        build_batch_messages(ctxs + ctxs[:1])
    no_labels = PatchContext(ctxs[0].overall, ctxs[0].regions, ctxs[0].region_pixels)
    with pytest.raises(ValueError, match="no labels"):
        build_batch_messages([ctxs[0], no_labels])


CAPTIONS = ["A river crosses the forest.", "Fields surround a town.", "Snow covers the peaks."]


@pytest.mark.parametrize(
    "answer",
    [
        "Image 1: {0}\n\nImage 2: {1}\n\nImage 3: {2}",
        "**Image 1:** {0}\n\n**Image 2:** {1}\n\n**Image 3:** {2}\n",
        "### Image 1\n{0}\n\n### Image 2\n{1}\n\n### Image 3\n{2}",
        "Here they are.\n\n1. **Image 1**: {0}\n2. **Image 2**: {1}\n3. **Image 3**: {2}",
        "Image #1 - {0}\nImage #2 - {1}\nImage #3 - {2}",
        "First image: {0}\nSecond image: {1}\nThird image: {2}",
        "**Image One**\n{0}\n\n**Image Two**\n{1}\n\n**Image Three**\n{2}",
        "1. {0}\n2. {1}\n3. {2}",
        "Image 1: {0}\n\n---\n\nImage 2: {1}\n\n---\n\nImage 3: {2}",
        "image 1) {0}\nIMAGE 2) {1}\nImage 3) {2}",
    ],
)
def test_split_answer_formats(answer: str) -> None:
    assert split_answer(answer.format(*CAPTIONS), 3) == CAPTIONS


def test_split_answer_keeps_inline_mentions() -> None:
    text = "Image 1: A lake, unlike Image 2: nothing.\nImage 2: Crops."
    assert split_answer(text, 2) == ["A lake, unlike Image 2: nothing.", "Crops."]


@pytest.mark.parametrize(
    ("answer", "n"),
    [
        ("Image 1: a\nImage 2: b\nImage 3: c", 2),  # too many
        ("Image 1: a\nImage 2: b", 3),  # too few
        ("Image 1: a\nImage 3: b", 2),  # a gap
        ("Image 2: a\nImage 1: b", 2),  # out of order
        ("Image 1: a\nImage 1: b", 2),  # repeated
        ("Image 1:\nImage 2: b", 2),  # an empty caption
        ("Image 1 shows a river.\nImage 2 shows crops.", 2),  # prose, not markers
        ("A river crosses the forest. Fields surround a town.", 2),  # no markers at all
        ("   ", 1),
    ],
)
def test_split_answer_refuses(answer: str, n: int) -> None:
    assert split_answer(answer, n) is None


def test_split_answer_single() -> None:
    assert split_answer("A river crosses the forest.\n", 1) == ["A river crosses the forest."]
    assert split_answer("**Image 1:** A river.", 1) == ["A river."]


# --- cen-layout ------------------------------------------------------------------------------


def test_layout_golden() -> None:
    cell = 7000
    grid3 = np.stack(
        [
            counts(tree=cell),
            counts(water=3000, tree=4000),
            counts(tree=cell),
            counts(tree=cell),
            counts(water=3000, tree=4000),
            counts(tree=cell),
            counts(tree=cell),
            counts(water=3000, tree=4000),
            counts(tree=5000, dev=2000),
        ]
    )
    overall = grid3.sum(axis=0)  # water 9000, tree 52000, developed 2000 of 63000 pixels
    ctx = PatchContext(
        overall=overall,
        regions=np.zeros((5, 12), np.int64),
        region_pixels=np.full(5, Q),
        grid3=grid3,
        layout={
            WATER: ClassLayout(1, 1.0, 6.0, "north-south", ("top", "bottom"), 0.0),
            TREE: ClassLayout(2, 0.55, 1.5, "compact", ("top", "bottom", "left", "right"), 0.3),
            DEV: ClassLayout(1, 1.0, 1.2, "compact", (), 0.0),
        },
    )
    # Tree needs 7 cells to reach 80 % of its 52000 pixels: the whole image. Water's three
    # 3000-pixel cells: 6000 < 7200 after two, so all three, named in grid order.
    expected = "\n".join(
        [
            "Describe the satellite image with this land-cover layout.",
            "Land-cover types, from most to least:",
            "- tree, 83 % of the image: 2 separate patches, in a patchy layout, the largest one "
            "compact, holding 55 % of it, touching all four edges; across the whole image.",
            "- water, 14 % of the image: one long, narrow body of water running north-south, "
            "touching the top and bottom edges; in the top, centre and bottom.",
            "- developed area, 3 % of the image: one compact built-up area, away from the edges; "
            "in the bottom right.",
            "Grid cells, each with its main land-cover types and their share of the cell:",
            "- top left: tree 100 %",
            "- top: tree 57 %, water 43 %",
            "- top right: tree 100 %",
            "- left: tree 100 %",
            "- centre: tree 57 %, water 43 %",
            "- right: tree 100 %",
            "- bottom left: tree 100 %",
            "- bottom: tree 57 %, water 43 %",
            "- bottom right: tree 71 %, developed area 29 %",
        ]
    )
    messages = build_messages("cen-layout", ctx, 0, "p")
    assert messages[0]["content"] == layout.SYSTEM
    assert user(messages) == expected


def test_layout_without_descriptors_and_with_no_data() -> None:
    lab = np.zeros((256, 256), np.uint8)
    lab[:, 100:110] = WATER  # a north-south strip, half of it outside the left third
    text = user(build_messages("cen-layout", PatchContext.from_labels(lab), 0, "p"))
    assert "- water, 4 % of the image: in the top, centre and bottom." in text
    assert "Pixels without land-cover data: 96 % of the image." in text
    assert "- top left: a few scattered pixels of land cover" not in text
    assert "- top left: no land-cover data" in text


def test_layout_needs_grid() -> None:
    ctx = PatchContext.from_labels(town_map())
    bare = PatchContext(ctx.overall, ctx.regions, ctx.region_pixels)
    with pytest.raises(ValueError, match="grid3"):
        build_messages("cen-layout", bare, 0, "p")


def test_class_layout_round_trip_and_checks() -> None:
    lay = ClassLayout(3, 0.5, 2.0, "east-west", ("left",), 0.1)
    assert ClassLayout.from_dict(lay.to_dict()) == lay
    assert lay.to_dict()["edges"] == ["left"]
    with pytest.raises(ValueError, match="edges"):
        ClassLayout(1, 1.0, 1.0, "compact", ("north",), 0.0)
