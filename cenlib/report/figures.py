"""The report's charts (matplotlib figures, no pyplot: each is its own ``Figure`` on Agg) and
their encoding as PNG data URLs. Classes keep ChatEarthNet's colours; splits keep one hatch
each, so that a class's bars read as one colour across splits."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from cenlib.classes import CLASSES
from cenlib.report.stats import (
    ALL,
    ClassDistribution,
    Mentions,
    Review,
    StageCost,
    Verification,
)
from cenlib.report.text import TextStats

HATCHES = {"train": "", "validation": "///", "test": "...", ALL: "xx"}
STATUS_COLOURS = {"pass": "#2e7d32", "repaired": "#f9a825", "failed": "#c62828"}
DPI = 100


def png_data_url(fig: Figure) -> str:
    """The figure as ``data:image/png;base64,...`` (rasterised at :data:`DPI`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"optimize": True})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def colour(index: int) -> str:
    return "#" + CLASSES[index].color


def shown_classes(dist: ClassDistribution) -> list[int]:
    """Every land-cover class (1..11), and background only where some pixels are nodata."""
    return [c.index for c in CLASSES if c.index > 0 or dist.share[ALL][0] > 0]


def _class_bars(
    ax: Axes, dist: ClassDistribution, values: dict[str, np.ndarray], xlabel: str
) -> None:
    classes = shown_classes(dist)
    gs = [g for g in dist.nonempty if g != ALL] or [ALL]
    height = 0.8 / len(gs)
    for j, g in enumerate(gs):
        y = np.arange(len(classes)) + (j - (len(gs) - 1) / 2) * height
        ax.barh(
            y,
            values[g][classes] * 100,
            height=height,
            color=[colour(c) for c in classes],
            edgecolor="#333333",
            linewidth=0.5,
            hatch=HATCHES.get(g, "--"),
        )
    ax.set_yticks(np.arange(len(classes)), [CLASSES[c].name for c in classes], fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)


def land_cover(dist: ClassDistribution) -> Figure:
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    a, b = fig.subplots(1, 2, sharey=True)
    a.invert_yaxis()  # once: the axes share y
    _class_bars(a, dist, dist.share, "pixel share (%)")
    a.set_title("Share of all pixels per class", fontsize=9)
    _class_bars(b, dist, dist.presence, "patches containing the class (%)")
    b.set_title("Presence: fraction of patches with the class", fontsize=9)
    b.set_xlim(0, 100)
    gs = [g for g in dist.nonempty if g != ALL] or [ALL]
    handles = [
        Patch(
            facecolor="white",
            edgecolor="#333333",
            hatch=HATCHES.get(g, "--"),
            label=f"{g} ({dist.patches[g]})",
        )
        for g in gs
    ]
    fig.legend(
        handles=handles,
        fontsize=8,
        loc="outside upper center",
        ncols=len(handles),
        title="split (patches); bar colour: the class",
        title_fontsize=8,
        frameon=False,
    )
    return fig


def caption_lengths(t: TextStats) -> Figure:
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    a, b, c = fig.subplots(1, 3, width_ratios=[1, 1, 1.2])
    for ax, values, what in ((a, t.words, "words"), (b, t.tokens, "tokens (cl100k_base)")):
        bins = min(30, max(5, len(np.unique(values))))
        ax.hist(values, bins=bins, color="#4a7bb7", edgecolor="white", linewidth=0.5)
        ax.axvline(values.mean(), color="#c62828", linewidth=1.2, label=f"mean {values.mean():.1f}")
        ax.set_xlabel(f"caption length, {what}", fontsize=8)
        ax.set_ylabel("captions", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    a.set_title("Caption length in words", fontsize=9)
    b.set_title("Caption length in tokens", fontsize=9)
    words = t.frequent[:15]
    c.barh(np.arange(len(words)), [n for _, n in words], color="#6d9c74")
    c.set_yticks(np.arange(len(words)), [w for w, _ in words], fontsize=7)
    c.invert_yaxis()
    c.set_xlabel("occurrences", fontsize=8)
    c.tick_params(axis="x", labelsize=7)
    c.set_title(f"Most frequent words (vocabulary {t.vocabulary})", fontsize=9)
    return fig


def mentions_vs_presence(m: Mentions, classes: list[int]) -> Figure:
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(classes))
    n = max(m.patches, 1)
    kinds = (
        (m.present, "", "present in the patch"),
        (m.mentioned, "///", "mentioned in the caption"),
        (m.mentioned_absent, "xx", "mentioned but absent"),
    )
    for j, (values, hatch, label) in enumerate(kinds):
        ax.bar(
            x + (j - 1) * 0.27,
            values[classes] / n * 100,
            width=0.27,
            hatch=hatch,
            color=[colour(c) for c in classes],
            edgecolor="#333333",
            linewidth=0.5,
            label=label,
        )
    ax.set_xticks(x, [CLASSES[c].name for c in classes], fontsize=8, rotation=20, ha="right")
    ax.set_ylabel("patches (%)", fontsize=8)
    ax.set_ylim(0, 105)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    handles = [
        Patch(facecolor="white", edgecolor="#333333", hatch=h, label=lab) for _, h, lab in kinds
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper right", ncols=3)
    ax.set_title("Class mentions in captions against presence in the patch", fontsize=9)
    return fig


def verification(v: Verification) -> Figure:
    fig = Figure(figsize=(11, 3.0), layout="constrained")
    a, b = fig.subplots(1, 2, width_ratios=[1, 2.4])
    left = 0.0
    for status, count in v.status.items():
        share = count / max(v.captions, 1) * 100
        a.barh(
            [0],
            [share],
            left=left,
            height=0.5,
            color=STATUS_COLOURS[status],
            label=f"{status} ({count})",
        )
        if share >= 8:
            a.text(
                left + share / 2,
                0,
                f"{share:.0f}%",
                ha="center",
                va="center",
                fontsize=8,
                color="white",
                weight="bold",
            )
        left += share
    a.set_xlim(0, 100)
    a.set_ylim(-0.5, 0.9)
    a.set_yticks([])
    a.set_xlabel("captions (%)", fontsize=8)
    a.tick_params(labelsize=7)
    a.legend(fontsize=7, loc="upper center", ncols=3, frameon=False, handlelength=1)
    a.set_title(f"Outcome of {v.captions} captions", fontsize=9)
    types = list(v.first)
    x = np.arange(len(types))
    n = max(v.captions, 1)
    first = [v.first[t] / n * 100 for t in types]
    b.bar(x - 0.2, first, width=0.4, color="#8e99a8", label="first caption")
    b.bar(
        x + 0.2,
        [v.final[t] / n * 100 for t in types],
        width=0.4,
        color="#37474f",
        label="final caption",
    )
    b.set_xticks(x, types, fontsize=8)
    b.set_ylabel("captions with it (%)", fontsize=8)
    b.tick_params(axis="y", labelsize=7)
    b.set_ylim(0, max(5.0, max(first, default=0) * 1.2))
    if not any(v.first.values()) and not any(v.final.values()):
        b.text(
            0.5,
            0.55,
            "no violation of any type: every caption passed its first check",
            transform=b.transAxes,
            ha="center",
            fontsize=9,
            color="#57606a",
        )
    else:
        b.legend(fontsize=7)
    b.grid(axis="y", color="#dddddd", linewidth=0.5)
    b.set_axisbelow(True)
    b.set_title("Violations by type, before and after repair", fontsize=9)
    return fig


def review(r: Review) -> Figure:
    fig = Figure(figsize=(5.5, 2.4), layout="constrained")
    ax = fig.subplots()
    kinds = list(r.latest)
    colours = {"accept": "#2e7d32", "reject": "#c62828", "edit": "#1565c0"}
    ax.barh(kinds, [r.latest[k] for k in kinds], color=[colours[k] for k in kinds])
    ax.invert_yaxis()
    ax.set_xlabel("patches (latest decision)", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    ax.set_title(f"Review: {r.reviewed} patches, {r.decisions} decisions", fontsize=9)
    return fig


def stage_times(rows: list[StageCost]) -> Figure:
    timed = [r for r in rows if r.seconds is not None]
    fig = Figure(figsize=(5.5, 0.7 + 0.3 * max(len(timed), 1)), layout="constrained")
    ax = fig.subplots()
    ax.barh([r.stage for r in timed], [r.seconds or 0.0 for r in timed], color="#5c6bc0")
    ax.invert_yaxis()
    ax.set_xlabel("seconds", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_title("Wall time per stage", fontsize=9)
    return fig
