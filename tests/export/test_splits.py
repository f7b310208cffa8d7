"""Spatially disjoint splits: every block in one split, ratios within one block's size,
reproducible from the seed, stratified so each split holds every stratum."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cenlib.export import SplitError, assign_splits, block_of
from cenlib.grid import PatchKey


def _tiles(cols: range, rows: range, zoom: int = 13) -> list[PatchKey]:
    return [
        PatchKey("chatearthnet", zoom, c, r, sub) for c in cols for r in rows for sub in range(4)
    ]


@settings(max_examples=40, deadline=None)
@given(
    n_cols=st.integers(1, 30),
    n_rows=st.integers(1, 12),
    block_zoom=st.sampled_from([13, 12, 11]),
    seed=st.integers(0, 10**6),
)
def test_blocks_are_disjoint_and_ratios_within_one_block(
    n_cols: int, n_rows: int, block_zoom: int, seed: int
) -> None:
    keys = _tiles(range(4000, 4000 + n_cols), range(2800, 2800 + n_rows))
    got = assign_splits(keys, seed=seed, block_zoom=block_zoom)
    assert set(got) == {k.id for k in keys}
    per_block: dict[tuple[str, int, int, int], set[str]] = {}
    for k in keys:
        per_block.setdefault(block_of(k, block_zoom), set()).add(got[k.id])
    assert all(len(s) == 1 for s in per_block.values())  # no block spans two splits
    biggest = max(Counter(block_of(k, block_zoom) for k in keys).values())
    counts = Counter(got.values())
    for name, ratio in zip(("train", "validation", "test"), (0.6, 0.1, 0.3), strict=True):
        assert abs(counts[name] - ratio * len(keys)) <= biggest, (name, counts, biggest)


def test_reproducible_and_independent_of_order() -> None:
    keys = _tiles(range(100, 140), range(50, 60))
    a = assign_splits(keys, seed=7)
    assert a == assign_splits(list(reversed(keys)), seed=7)
    assert a != assign_splits(keys, seed=8)


def test_utm_blocks() -> None:
    keys = [PatchKey("utm", 32632, c, r) for c in range(20) for r in range(20)]
    got = assign_splits(keys, (0.5, 0.25, 0.25), utm_block=4)
    for k in keys:
        assert got[k.id] == got[PatchKey("utm", 32632, k.col // 4 * 4, k.row // 4 * 4).id]
    counts = Counter(got.values())
    assert abs(counts["train"] - 200) <= 16 and abs(counts["test"] - 100) <= 16


def test_stratified_splits_hold_every_stratum() -> None:
    keys = _tiles(range(0, 60), range(0, 10))
    # A rare stratum (every 10th tile column) that a plain deal could leave out of a split.
    strata = {k.id: "snow" if k.col % 10 == 0 else "tree" for k in keys}
    got = assign_splits(keys, seed=3, strata=strata)
    for name in ("train", "validation", "test"):
        assert {strata[p] for p, s in got.items() if s == name} == {"snow", "tree"}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ratios": (0.5, 0.5)}, "2 values for 3 splits"),
        ({"ratios": (0.6, 0.3, 0.3)}, "sum to 1"),
        ({"block_zoom": 14}, "block_zoom 14 must be 0..13"),
    ],
)
def test_bad_settings_are_named(kw: dict, match: str) -> None:
    with pytest.raises(SplitError, match=match):
        assign_splits(_tiles(range(2), range(2)), **kw)
