"""The report's pure parts: areas of samples, the overview's extent, text statistics, cells,
and the Natural Earth layers the map is drawn on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cenlib.report.basemap import read_layer, scale_for
from cenlib.report.maps import _extent, areas
from cenlib.report.page import Cell, num, pct
from cenlib.report.stats import stage_costs
from cenlib.report.text import STOP_WORDS, text_stats, token_count


def _boxes(centres: list[tuple[float, float]], size: float = 0.02) -> np.ndarray:
    return np.asarray([(x, y, x + size, y + size) for x, y in centres], dtype=float)


def test_areas_group_touching_cells_largest_first() -> None:
    boxes = _boxes([(11.97, 46.56), (12.01, 46.58), (12.99, 47.2), (-44.3, -2.6), (25.1, 69.4)])
    found = areas(boxes)
    assert [a.letter for a in found] == ["A", "B", "C"]
    assert sorted(found[0].rows.tolist()) == [0, 1, 2]  # 11.97 and 12.99 E: touching cells
    assert found[0].bbox == pytest.approx((11.97, 46.56, 13.01, 47.22))
    assert sorted(r for a in found for r in a.rows.tolist()) == list(range(5))


@given(
    st.lists(st.tuples(st.floats(-179.9, 179.8), st.floats(-84.0, 84.0)), min_size=1, max_size=20)
)
def test_the_overview_holds_every_sample(centres: list[tuple[float, float]]) -> None:
    boxes = _boxes(centres, 0.05)
    w, s, e, n = _extent(boxes)
    assert -180 <= w < e <= 180 and -90 <= s < n <= 90
    assert (boxes[:, 0] >= w - 1e-9).all() and (boxes[:, 2] <= e + 1e-9).all()
    assert (boxes[:, 1] >= s - 1e-9).all() and (boxes[:, 3] <= n + 1e-9).all()


def test_text_stats() -> None:
    t = text_stats(["Water, water and a lake.", "The lake's man-made shore; 3 trees."])
    assert t.words.tolist() == [5, 5]  # "3" is not a word
    assert t.vocabulary == 9  # water and a lake the lake's man-made shore trees
    assert t.frequent[:2] == [("water", 2), ("lake", 1)]
    assert not {w for w, _ in t.frequent} & STOP_WORDS
    assert t.tokens.tolist() == [token_count("Water, water and a lake."), t.tokens[1]]
    assert 0 < t.tokens[0] < 10


def test_cells_escape_and_carry_their_values() -> None:
    assert Cell("<b>").render() == "<td>&lt;b&gt;</td>"
    assert num(1234, "n").render() == '<td class="num" data-stat="n" data-value="1234">1,234</td>'
    assert pct(0.25, "p").render("b") == '<b data-stat="p" data-value="0.25">25.0%</b>'


def test_natural_earth_layers_are_read_and_clipped() -> None:
    box = (-45.0, -3.5, -43.5, -2.0)  # the coast of São Luís
    coast = read_layer(scale_for(box), "coastline", box)
    land = read_layer("10m", "land", box)
    assert len(coast) and len(land)
    w, s, e, n = coast.total_bounds
    assert w >= box[0] and s >= box[1] and e <= box[2] and n <= box[3]
    assert scale_for((-180, -90, 180, 90)) == "110m" and scale_for(box) == "10m"
    assert len(read_layer("110m", "land", (-180, -90, 180, 90))) > 100  # countries


def test_stage_times_prefer_the_jobs_clock() -> None:
    summary = {
        "wall": {"plan": 3.5, "ingest": 20.0},
        "plan": {"patches": 4},
        "ingest": {"seconds": 18.0, "ok": 4, "failed": 0},
        "export": {"seconds": 2.0, "exported": 4},
        "report": {"seconds": 1.0},  # not a row: the report is the page itself
    }
    rows = {r.stage: r.seconds for r in stage_costs(summary)}
    assert rows == {"plan": 3.5, "ingest": 20.0, "export": 2.0}
    assert stage_costs(None) == [] == stage_costs({})
