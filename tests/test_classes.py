"""The WorldCover -> ChatEarthNet class table."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cenlib.classes import (
    CLASSES,
    NUM_CLASSES,
    WORLDCOVER_CODES,
    by_name,
    index_to_worldcover,
    palette_rgb,
    worldcover_to_index,
)


def test_table_matches_chatearthnet() -> None:
    assert NUM_CLASSES == 12
    assert [c.worldcover_code for c in CLASSES] == [0, 80, 50, 10, 20, 30, 40, 60, 70, 90, 95, 100]
    assert by_name("developed area").worldcover_code == 50
    assert palette_rgb().shape == (12, 3)


@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(1, 8), st.integers(1, 8)),
        elements=st.sampled_from((0, *WORLDCOVER_CODES)),
    )
)
def test_roundtrip(codes: np.ndarray) -> None:
    assert np.array_equal(index_to_worldcover(worldcover_to_index(codes)), codes)


@given(st.integers(0, 255))
def test_unknown_codes_are_background(code: int) -> None:
    idx = int(worldcover_to_index(np.array([code], np.uint8))[0])
    assert (idx == 0) == (code not in WORLDCOVER_CODES)
