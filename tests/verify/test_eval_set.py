"""The verify evaluation set is consistent: indices, labels, and the clean captions' claims.

This tests the data, not the verifier: its class lexicon (``CLASS_WORDS``) is the list of words the
captions of this set use, kept apart from ``cenlib.verify`` on purpose.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from eval_set import (
    CLASS_NAMES,
    INJECTED_TYPES,
    MIN_PIXELS,
    SOURCES,
    VIOLATION_TYPES,
    load_eval,
    load_maps,
    truth,
)

CLASS_WORDS: dict[str, tuple[str, ...]] = {
    "water": (
        "water", "waters", "lake", "lakes", "river", "rivers", "stream", "streams", "brook",
        "pond", "ponds", "reservoir", "reservoirs", "canal", "canals", "sea", "lagoon",
        "channel", "channels", "inlet", "inlets", "water-rich",
    ),
    "developed area": (
        "developed", "urban", "built-up", "built up", "building", "buildings", "house", "houses",
        "settlement", "settlements", "town", "towns", "village", "villages", "city", "road",
        "roads", "street", "streets", "residential",
    ),
    "tree": (
        "tree", "trees", "tree-covered", "tree cover", "forest", "forests", "forested", "woodland",
        "woodlands", "wooded", "wood", "woods", "woodlot", "woodlots", "canopy", "grove",
    ),
    "shrub": (
        "shrub", "shrubs", "shrubland", "shrublands", "shrub-covered", "shrubby", "scrub",
        "scrubland", "bush", "bushes", "thicket", "thickets",
    ),
    "grass": (
        "grass", "grasses", "grassland", "grasslands", "grassy", "meadow", "meadows", "pasture",
        "pastures",
    ),
    "crop": (
        "crop", "crops", "cropland", "croplands", "farmland", "farmlands", "field", "fields",
        "agricultural", "cultivated", "farming", "arable",
    ),
    "bare land": (
        "bare", "barren", "soil", "rock", "rocks", "rocky", "sand", "sandy", "sandbank",
    ),
    "snow": (
        "snow", "snow-covered", "snowfield", "snowfields", "ice", "icy", "glacier", "glaciers",
    ),
    "wetland": (
        "wetland", "wetlands", "marsh", "marshes", "marshy", "marshland", "swamp", "swamps",
        "swampy", "bog", "bogs",
    ),
    "mangroves": ("mangrove", "mangroves"),
    "moss": ("moss", "mosses", "mossy", "moss-covered", "lichen", "lichens"),
}  # fmt: skip

_WORD_CLASS = {w: c for c, words in CLASS_WORDS.items() for w in words}
MENTION = re.compile(
    r"(?<![\w-])("
    + "|".join(re.escape(w) for w in sorted(_WORD_CLASS, key=len, reverse=True))
    + r")(?![\w-])",
    re.IGNORECASE,
)
# A mention is negated when its clause (back to the last , . ; : or linking word) holds a cue.
_CLAUSE_START = re.compile(r"[.,;:!?]|\b(?:but|while|whereas|which|where|apart from)\b", re.I)
_NEGATION = re.compile(r"\b(?:no|not|without|absence of|free of|neither|nor|none of)\b", re.I)
BANNED = re.compile(
    r"\b(?:possibly|likely|perhaps|context|segmentation|appears?|appeared|appearing|changes?|"
    r"changed|changing|transitions?|dynamic|probably|might)\b|\bit seems\b|\d",
    re.IGNORECASE,
)


def mentions(text: str) -> list[tuple[str, bool, int]]:
    """(class name, negated, offset) for every class word in `text`."""
    out = []
    for m in MENTION.finditer(text):
        head = text[: m.start()]
        starts = [s.end() for s in _CLAUSE_START.finditer(head)]
        clause = head[starts[-1] if starts else 0 :]
        out.append((_WORD_CLASS[m.group(1).lower()], bool(_NEGATION.search(clause)), m.start()))
    return out


def asserted(text: str) -> set[str]:
    """Classes the text mentions without negating them."""
    return {c for c, negated, _ in mentions(text) if not negated}


ROWS = load_eval()
MAPS = load_maps()


def test_maps() -> None:
    assert MAPS.dtype == np.uint8 and MAPS.ndim == 3 and MAPS.shape[1:] == (256, 256)
    assert 40 <= len(MAPS) <= 80
    assert int(MAPS.max()) < len(CLASS_NAMES)
    dominant_in = {name: 0 for name in CLASS_NAMES[1:]}
    for labels in MAPS:
        for name, t in truth(labels).items():
            dominant_in[name] += t["dominant"]
    assert all(n >= 2 for n in dominant_in.values()), dominant_in


def test_rows_are_well_formed() -> None:
    assert ROWS
    for i, row in enumerate(ROWS):
        assert 0 <= row["index"] < len(MAPS), i
        assert row["source"] in SOURCES, i
        assert isinstance(row["caption"], str) and row["caption"].strip(), i
        for e in row["expect"]:
            assert set(e) == {"type", "class"}, (i, e)
            assert e["type"] in VIOLATION_TYPES, (i, e)
            assert e["class"] is None or e["class"] in CLASS_NAMES[1:], (i, e)
        if "injected" in row:
            assert row["injected"] in INJECTED_TYPES, i
            clean = ROWS[row["of"]]
            assert "injected" not in clean and clean["expect"] == [], i
            assert clean["index"] == row["index"] and clean["source"] == row["source"], i
            assert row["expect"], i
            assert row["caption"] != clean["caption"], i


# Clean captions written for the set (the smollm2 answers are labelled by hand, not checked here).
CLEAN = [
    (i, r)
    for i, r in enumerate(ROWS)
    if "injected" not in r and not r["expect"] and r["source"] != "smollm2"
]


@pytest.mark.parametrize(("line", "row"), CLEAN, ids=[f"line{i}" for i, _ in CLEAN])
def test_clean_caption_holds(line: int, row: dict[str, Any]) -> None:
    text = row["caption"]
    t = truth(MAPS[row["index"]])
    said = asserted(text)
    for name in said:
        assert t[name]["pixels"] >= MIN_PIXELS, (line, "hallucinated", name)
    for name, info in t.items():
        if info["dominant"]:
            assert name in said, (line, "omitted", name)
    assert not BANNED.search(text), (line, BANNED.search(text))
    assert text.rstrip().endswith("."), line
    assert len(text.split()) >= 15, line


def test_labelled_hallucinations_and_omissions_follow_the_rules() -> None:
    for i, row in enumerate(ROWS):
        t = truth(MAPS[row["index"]])
        for e in row["expect"]:
            if e["type"] == "hallucinated":
                assert t[e["class"]]["pixels"] < MIN_PIXELS, (i, e)
            if e["type"] == "omitted":
                assert t[e["class"]]["dominant"], (i, e)
        if row["source"] == "smollm2":
            continue  # labelled by hand; the word list above does not cover a model's wording
        said = asserted(row["caption"])
        want_h = sorted(n for n in said if t[n]["pixels"] < MIN_PIXELS)
        want_o = sorted(n for n, v in t.items() if v["dominant"] and n not in said)
        if {"length", "language"} & {e["type"] for e in row["expect"]}:
            continue
        got_h = sorted(e["class"] for e in row["expect"] if e["type"] == "hallucinated")
        got_o = sorted(e["class"] for e in row["expect"] if e["type"] == "omitted")
        assert (got_h, got_o) == (want_h, want_o), (i, row.get("injected"))


def test_injected_counts() -> None:
    counts = {k: 0 for k in INJECTED_TYPES}
    for row in ROWS:
        if "injected" in row:
            counts[row["injected"]] += 1
    assert all(n >= 35 for n in counts.values()), counts
