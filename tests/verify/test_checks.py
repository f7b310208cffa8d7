"""The verifier's kernel: the rules captioner's captions pass; the evaluation set's targets
(>= 95 % of injected errors caught per type, <= 5 % false alarms per source of clean
captions); the lexicon, negation and places on their own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from caption_support import label_maps
from eval_set import load_eval, load_maps
from scoring import score_eval, table

from cenlib.analysis import region_counts
from cenlib.captions.rules import answer
from cenlib.prompts import BANNED_WORDS, get_style, preview_labels
from cenlib.verify import LEXICON, Rules, check, find_mentions, score
from cenlib.verify.lexicon import normalise
from cenlib.verify.places import find_places


def _rules(style: str) -> Rules:
    st = get_style(style)
    lo, hi = st.caption_words
    return Rules(banned=st.banned, numbers=st.numbers_allowed, min_words=lo, max_words=hi)


@pytest.mark.parametrize("style", ["chatearthnet-3.5", "cen-layout"])
def test_rules_captions_pass(tmp_path: Path, style: str) -> None:
    """The rules captioner states only what the statistics support: every caption passes."""
    maps = np.concatenate([label_maps(150, seed=3), load_maps()])
    np.save(tmp_path / "maps.npy", maps)
    counts = region_counts(maps)
    failed = []
    for i, pv in enumerate(preview_labels(tmp_path / "maps.npy", style, 0)):
        facts = {k: v for k, v in pv.items() if k != "messages"}
        text = answer(pv["messages"], facts, 0, str(i))
        found = check(text, counts[i], _rules(style))
        if found:
            failed.append((i, text, found))
    assert not failed, failed[:3]


HELDOUT = Path(__file__).parent / "data" / "heldout.jsonl"


@pytest.mark.parametrize(
    ("name", "sources"),
    [("eval", ("gpt", "chatearthnet")), ("heldout", ("claude", "terse", "gpt4v", "mixed"))],
)
def test_evaluation_set_targets(name: str, sources: tuple[str, ...]) -> None:
    """``eval``: the set the verifier was developed on; ``heldout``: written apart, in other
    phrasing, and first run once the verifier was done (data/HELDOUT.md)."""
    if name == "eval":
        lines = load_eval()
    else:
        lines = [json.loads(x) for x in HELDOUT.read_text(encoding="utf-8").splitlines() if x]
    s = score_eval(load_maps(), lines)
    print("\n" + table(s))
    low = {k: s.detection(k) for k in s.injected if s.detection(k) < 0.95}
    assert not low, (low, s.misses[:3])
    assert len(s.injected) == 7 and min(s.injected.values()) >= 30
    for src in sources:
        assert s.clean[src] >= 25
        assert s.false_alarm_rate(src) <= 0.05, (src, s.alarms[:3])


def test_every_lexicon_word_is_found_as_a_mention() -> None:
    for cls, words in LEXICON.items():
        for w in words:
            found = find_mentions(f"In the image, {w} can be seen.")
            assert [m.cls for m in found] == [cls], (w, found)


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("Built-up areas and TREE-COVERED hills.", [(2, False), (3, False)]),
        ("Cities, villages and marshes.", [(2, False), (2, False), (9, False)]),
        ("There is no water, wetland or snow.", [(1, True), (9, True), (8, True)]),
        ("Without trees, and grassland covers the rest.", [(3, True), (5, False)]),
        ("The absence of buildings is clear; forests abound.", [(2, True), (3, False)]),
        ("Water is absent. Ice-free lakes.", [(1, True), (8, True), (1, False)]),
        ("Not only forest but also rivers.", [(3, False), (1, False)]),
        ("A mangrove forest lines the shore of the sea.", [(10, False), (1, False)]),
        ("Neither crops nor shrubs grow here.", [(6, True), (4, True)]),
        ("Streets and downtown; none of it is urban.", [(2, False), (2, False), (2, True)]),
        ("Grass covers the image, and tree cover the rest.", [(5, False), (3, False)]),
    ],
)
def test_mentions_and_negation(text: str, expect: list[tuple[int, bool]]) -> None:
    found = find_mentions(text)
    assert [(m.cls, m.negated) for m in found] == expect
    assert all(text[m.start : m.end] == m.words for m in found)


@pytest.mark.parametrize(
    ("text", "places"),
    [
        ("In the north-east and the upper right corner.", ["top right", "top right"]),
        ("Along the bottom edge and the southern border.", ["bottom edge", "bottom edge"]),
        ("A river runs north-south through the centre.", ["middle"]),
        ("On the left, meadows; the western half is forest.", ["left", "left"]),
        ("What is left is bare, right next to the road.", []),
        ("Around the edges, at the periphery of the image.", ["edges", "edges"]),
        ("Throughout the entire scene.", ["whole", "whole"]),
    ],
)
def test_places(text: str, places: list[str]) -> None:
    assert [p.place for p in find_places(normalise(text))] == places


def _two_halves() -> np.ndarray:
    m = np.full((256, 256), 3, np.uint8)  # tree
    m[128:] = 1  # water in the bottom half
    return region_counts(m[None])[0]


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("Forest covers the top half of the image and a lake fills the bottom half.", set()),
        ("Forest covers the bottom half of the image and water lies in the south.", {"misplaced"}),
        ("Forest covers the north, a lake the south; a town sits in the middle.", {"hallucinated"}),
        ("A lake fills the bottom half of the scene, with nothing else in view.", {"omitted"}),
        ("The image is dominated by water in the south and by forest in the north.", set()),
        ("A small patch of forest in the north; the lake covers the south.", {"amount"}),
        ("Forest perhaps covers the north, and a lake the south of the image.", {"banned"}),
        ("Forest covers 50% of the image in the north and the lake the south.", {"banned"}),
        ("Forest covers the north and a lake fills the south of the image and", {"truncated"}),
        ("Der Wald bedeckt den Norden des Bildes, im Süden liegt ein See.", {"language"}),
    ],
)
def test_violation_kinds(text: str, kinds: set[str]) -> None:
    found = check(text, _two_halves(), Rules(banned=BANNED_WORDS, min_words=5))
    assert {v["type"] for v in found} == kinds, found
    for v in found:
        s, e = v["span"]
        assert text[s:e] == v["words"]
    assert (score(found) == 1.0) == (not found)


def test_the_answer_stopped_at_max_tokens_is_truncated() -> None:
    text = "Forest covers the north and a lake fills the south of the image."
    found = check(text, _two_halves(), Rules(min_words=5), finish_reason="length")
    assert [v["type"] for v in found] == ["truncated"]


def test_preview_prints_one_verdict_per_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cenlib.cli import app

    m = np.full((2, 256, 256), 3, np.uint8)
    m[1, 128:] = 1
    np.save(tmp_path / "maps.npy", m)
    lines = [
        {"index": 1, "caption": "Forest in the north, and a lake in the south.", "id": "x"},
        {"index": 0, "caption": "The image shows a lake surrounded by a little forest."},
    ]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = CliRunner().invoke(
        app,
        ["verify", "preview", "--labels", str(tmp_path / "maps.npy"), "--captions",
         str(tmp_path / "c.jsonl")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = [json.loads(x) for x in res.output.splitlines()]
    assert [o["index"] for o in out] == [1, 0]
    assert out[0]["pass"] is False and {v["type"] for v in out[0]["violations"]} == {"length"}
    kinds = {v["type"] for v in out[1]["violations"]}
    assert {"hallucinated", "amount"} <= kinds
    assert all(set(v) >= {"type", "class", "words", "span"} for v in out[1]["violations"])
    (tmp_path / "bad.jsonl").write_text('{"index": 5, "caption": "x"}\n')
    res = CliRunner().invoke(
        app,
        ["verify", "preview", "--labels", str(tmp_path / "maps.npy"), "--captions",
         str(tmp_path / "bad.jsonl")],
    )  # fmt: skip
    said = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2 and "bad.jsonl:1: index 5 is not a map index 0..1" in said
