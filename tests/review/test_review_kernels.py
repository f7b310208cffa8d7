"""The pure parts of the review page: caption segments by span, the PNG renderings."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cenlib.classes import palette_rgb
from cenlib.review.caption import class_index, segments
from cenlib.review.images import land_cover_png, rgb_png, stretch_rgb
from cenlib.verify import find_mentions


@dataclass(frozen=True)
class M:
    cls: int
    start: int
    end: int
    negated: bool = False


def test_segments_carry_mentions_and_violations() -> None:
    text = "Water and trees, but no snow."
    v: list[dict[str, Any]] = [
        {"type": "hallucinated", "class": "snow", "span": [24, 28], "reason": "no snow"},
        {"type": "length", "class": None, "span": None, "reason": "too short"},
        {"type": "amount", "class": "tree", "span": [0, 15], "reason": "wide"},
    ]
    segs = segments(text, find_mentions(text), v)
    assert "".join(s["text"] for s in segs) == text
    by = {s["text"]: s for s in segs}
    assert by["Water"] == {"text": "Water", "cls": 1, "negated": False, "violations": [2]}
    assert by["trees"]["cls"] == 3 and by["trees"]["violations"] == [2]
    assert by[" and "]["violations"] == [2] and by[" and "]["cls"] is None
    assert by["snow"] == {"text": "snow", "cls": 8, "negated": True, "violations": [0]}
    assert not any(1 in s["violations"] for s in segs)  # a whole-text violation marks no span


def test_class_of_a_violation_by_name_or_index() -> None:
    assert [class_index(c) for c in ("developed area", 3, None, "", "unicorn", 99)] == [
        2, 3, None, None, None, None,
    ]  # fmt: skip


@given(
    st.text(max_size=40),
    st.lists(st.tuples(st.integers(-5, 50), st.integers(-5, 50)), max_size=4),
    st.lists(st.tuples(st.integers(-5, 50), st.integers(-5, 50)), max_size=4),
)
def test_segments_always_give_the_text_back(
    text: str, mentions: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> None:
    ms = [M(1, a, b) for a, b in mentions]
    segs = segments(text, ms, [{"span": list(s)} for s in spans])
    assert "".join(s["text"] for s in segs) == text
    assert all(s["text"] for s in segs)


def test_rgb_stretch_and_no_data() -> None:
    rng = np.random.default_rng(0)
    refl = rng.integers(0, 3000, (3, 32, 32)).astype(np.int16)
    refl[:, 0, 0] = -32768
    rgb = stretch_rgb(refl, ["blue", "green", "red"])
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all() and rgb.max() == 255
    assert (stretch_rgb(refl[::-1], ["red", "green", "blue"]) == rgb).all()  # bands by name
    assert (stretch_rgb(np.full((3, 4, 4), -32768, np.int16), ["red", "green", "blue"]) == 0).all()
    png = rgb_png(refl, ["blue", "green", "red"])
    assert (np.asarray(Image.open(io.BytesIO(png))) == rgb).all()


def test_land_cover_in_the_palette() -> None:
    labels = np.arange(12, dtype=np.uint8).repeat(3).reshape(6, 6)
    img = Image.open(io.BytesIO(land_cover_png(labels))).convert("RGB")
    assert (np.asarray(img) == palette_rgb()[labels]).all()
