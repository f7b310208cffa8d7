"""The map of the exported samples: an overview over Natural Earth land, coastlines and borders,
and one zoomed panel per area of samples (a patch is about 2.4 km wide: invisible at the
overview's scale), where each patch is drawn as its own RGB image inside its footprint, outlined
in its split's colour.

Areas are groups of patches whose centres fall in touching 1-degree cells; the largest
:data:`MAX_ZOOMS` get a panel (lettered on the overview). Coordinates are plotted in lon/lat
with the aspect of the area's latitude, which is close to the tiles' own projection at this
scale; a Web-Mercator patch is a lon/lat rectangle, a UTM patch a slightly rotated one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Polygon, Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image
from shapely.geometry import shape

from cenlib.report import basemap
from cenlib.report.stats import groups

SPLIT_COLOURS = {"train": "#0072B2", "validation": "#E69F00", "test": "#CC79A7"}
OTHER_COLOUR = "#555555"
MAX_ZOOMS = 3
MAX_THUMBS = 400  # beyond this many patches the zoomed panels draw outlines only
THUMB = 64  # pixels a side of each patch image in the zoomed panels
OCEAN, LAND, LAKE = "#dcebf5", "#f4f1e8", "#dcebf5"
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Area:
    letter: str
    rows: npt.NDArray[np.int64]  # rows of the table
    bbox: Box


def split_colour(split: str) -> str:
    return SPLIT_COLOURS.get(split, OTHER_COLOUR)


def bboxes(table: pd.DataFrame) -> npt.NDArray[np.float64]:
    """(patches, 4) west, south, east, north."""
    return np.asarray([list(b) for b in table["bbox"]], dtype=float).reshape(-1, 4)


def areas(boxes: npt.NDArray[np.float64]) -> list[Area]:
    """Groups of patches in touching 1-degree cells, largest first."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    cells = {(math.floor(x), math.floor(y)) for x, y in zip(cx, cy, strict=True)}
    label: dict[tuple[int, int], int] = {}
    for start in sorted(cells):
        if start in label:
            continue
        label[start], todo = len(set(label.values())), [start]
        while todo:
            x, y = todo.pop()
            for n in ((x + i, y + j) for i in (-1, 0, 1) for j in (-1, 0, 1)):
                if n in cells and n not in label:
                    label[n] = label[start]
                    todo.append(n)
    of = np.asarray([label[(math.floor(x), math.floor(y))] for x, y in zip(cx, cy, strict=True)])
    found: list[Area] = []
    for k in sorted(set(of.tolist()), key=lambda k: (-(of == k).sum(), k)):
        rows = np.flatnonzero(of == k)
        b = boxes[rows]
        box = (
            float(b[:, 0].min()),
            float(b[:, 1].min()),
            float(b[:, 2].max()),
            float(b[:, 3].max()),
        )
        i = len(found)
        found.append(Area(chr(ord("A") + i) if i < 26 else str(i + 1), rows, box))
    return found


def sample_map(table: pd.DataFrame, root: Path) -> Figure:
    """The figure: overview on top, up to :data:`MAX_ZOOMS` zoomed areas below."""
    boxes = bboxes(table)
    found = areas(boxes)
    zooms = found[:MAX_ZOOMS]
    fig = Figure(figsize=(11, 4.6 + 3.6), layout="constrained")
    top, bottom = np.asarray(fig.subfigures(2, 1, height_ratios=[4.6, 3.6])).ravel()
    _overview(top.subplots(), table, boxes, found)
    axes = bottom.subplots(1, len(zooms), squeeze=False)[0]
    thumbs = len(table) <= MAX_THUMBS
    for ax, area in zip(axes, zooms, strict=True):
        _zoom(ax, table.iloc[area.rows], boxes[area.rows], area, root if thumbs else None)
    if len(found) > len(zooms):
        bottom.suptitle(
            f"{len(found) - len(zooms)} smaller areas not zoomed", fontsize=8, y=0.02, va="bottom"
        )
    return fig


def _extent(boxes: npt.NDArray[np.float64], ratio: float = 2.3) -> Box:
    """The overview's extent: the samples with room around them (at least 40 x 25 degrees),
    widened or heightened to the panel's ``ratio`` (width / height as drawn)."""
    w, s = boxes[:, 0].min(), boxes[:, 1].min()
    e, n = boxes[:, 2].max(), boxes[:, 3].max()
    cx, cy = (w + e) / 2, (s + n) / 2
    half_x, half_y = max((e - w) * 0.6, 20.0), max((n - s) * 0.6, 12.5)
    cos = max(math.cos(math.radians(cy)), 0.2)
    if half_x * cos / half_y < ratio:
        half_x = ratio * half_y / cos
    else:
        half_y = half_x * cos / ratio
    half_x, half_y = min(half_x, 180.0), min(half_y, 90.0)
    cx = min(max(cx, -180 + half_x), 180 - half_x)  # slide inside the world, do not shrink
    cy = min(max(cy, -90 + half_y), 90 - half_y)
    return (cx - half_x, cy - half_y, cx + half_x, cy + half_y)


def _draw_base(ax: Axes, box: Box, lines: float) -> None:
    scale = basemap.scale_for(box)
    ax.set_facecolor(OCEAN)
    styles = {
        "land": {"color": LAND, "linewidth": 0, "zorder": 1},
        "lakes": {"color": LAKE, "linewidth": 0, "zorder": 1.1},
        "coastline": {"color": "#5a6b7a", "linewidth": 0.6 * lines, "zorder": 1.2},
        "borders": {"color": "#9a8f80", "linewidth": 0.5 * lines, "linestyle": "--", "zorder": 1.2},
    }
    for name, style in styles.items():
        geoms = basemap.read_layer(scale, name, box)
        if len(geoms):
            geoms.plot(ax=ax, **style)


def _frame(ax: Axes, box: Box) -> None:
    ax.set_xlim(box[0], box[2])
    ax.set_ylim(box[1], box[3])
    mid = math.radians((box[1] + box[3]) / 2)
    ax.set_aspect(1 / max(math.cos(mid), 0.2))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(lambda v, _: _deg(v, "E", "W"))
    ax.yaxis.set_major_formatter(lambda v, _: _deg(v, "N", "S"))


def _deg(v: float, pos: str, neg: str) -> str:
    if abs(v) < 1e-9:
        return "0°"
    text = f"{abs(v):.3f}".rstrip("0").rstrip(".")
    return f"{text}°{pos if v > 0 else neg}"


def _overview(
    ax: Axes, table: pd.DataFrame, boxes: npt.NDArray[np.float64], found: list[Area]
) -> None:
    box = _extent(boxes)
    _draw_base(ax, box, lines=1.0)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    split = table["split"].astype(str).to_numpy()
    for g in groups(table)[:-1]:
        sel = split == g
        if not sel.any():
            continue
        ax.scatter(
            cx[sel],
            cy[sel],
            s=30,
            color=split_colour(g),
            edgecolor="black",
            linewidth=0.4,
            zorder=3,
            label=f"{g} ({int(sel.sum())})",
        )
    for a in found[:MAX_ZOOMS]:
        ax.annotate(
            a.letter,
            ((a.bbox[0] + a.bbox[2]) / 2, a.bbox[3]),
            xytext=(0, 6),
            textcoords="offset points",
            ha="center",
            fontsize=9,
            weight="bold",
            zorder=4,
        )
    _frame(ax, box)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7,
        title="split (patches)",
        title_fontsize=7,
        frameon=False,
    )
    ax.set_title(f"{len(table)} exported patches; lettered areas are zoomed below", fontsize=9)


def _zoom(
    ax: Axes, table: pd.DataFrame, boxes: npt.NDArray[np.float64], area: Area, root: Path | None
) -> None:
    w, s, e, n = area.bbox
    pad = max(e - w, n - s) * 0.08 + 0.002
    box = (w - pad, s - pad, e + pad, n + pad)
    _draw_base(ax, box, lines=1.6)
    for (pw, ps, pe, pn), rel in zip(boxes, table["image"], strict=True):
        if root is not None and (root / rel).is_file():
            ax.imshow(_thumb(root / rel), extent=(pw, pe, ps, pn), zorder=2, interpolation="none")
    for geo, sp in zip(table["footprint"], table["split"], strict=True):
        ring = np.asarray(shape(json.loads(geo)).exterior.coords)
        ax.add_patch(
            Polygon(
                ring,
                closed=True,
                fill=False,
                edgecolor=split_colour(str(sp)),
                linewidth=1.4,
                zorder=3,
            )
        )
    _frame(ax, box)
    ax.set_autoscale_on(False)
    _scale_bar(ax, box)
    lat, lon = (s + n) / 2, (w + e) / 2
    ax.set_title(
        f"{area.letter}: {_deg(lat, 'N', 'S')} {_deg(lon, 'E', 'W')}, {len(table)} patches",
        fontsize=8,
    )
    ax.tick_params(labelsize=6)
    for t in ax.get_xticklabels():
        t.set_rotation(30)


def _thumb(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as im:
        small = im.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX)
    return np.asarray(small)


def _scale_bar(ax: Axes, box: Box) -> None:
    """A bar of a round number of kilometres, about a quarter of the panel wide."""
    lat = math.radians((box[1] + box[3]) / 2)
    km_per_deg = 111.32 * math.cos(lat)
    want = (box[2] - box[0]) * km_per_deg / 4
    km = min(
        (v * 10**p for p in range(-1, 4) for v in (1, 2, 5) if v * 10**p <= want),
        default=0.1,
        key=lambda v: want - v,
    )
    x0 = box[0] + (box[2] - box[0]) * 0.05
    y0 = box[1] + (box[3] - box[1]) * 0.05
    length = km / km_per_deg
    height = (box[3] - box[1]) * 0.012
    ax.add_patch(Rectangle((x0, y0), length, height, color="black", zorder=4))
    label = f"{km:g} km"
    ax.text(
        x0 + length / 2,
        y0 + height * 2,
        label,
        ha="center",
        va="bottom",
        fontsize=6,
        zorder=4,
        bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
    )
