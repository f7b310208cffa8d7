"""``cen-layout``: a text-only style that tells the model where each class lies and its shape.

ChatEarthNet needed GPT-4V to get shapes and positions into its captions. Here the analysis
stage's layout descriptors (components, elongation, orientation, edges, fragmentation) and the
3 x 3 grid are spelled out in words, so that a text-only model can write "a river running
north-south through the centre" from statistics alone.

Per class with >= 20 pixels (most first, ties by class index): its share of the patch, a shape
phrase from its :class:`ClassLayout`, and where it lies: the fewest grid cells (largest first,
ties by cell order) that hold >= 80 % of its pixels, named in grid order, or "across the whole
image" when that takes six cells or more. Then, per grid cell, up to three classes with
>= 20 pixels there and their share of the cell.
"""

from __future__ import annotations

from typing import Any

from cenlib.prompts.context import (
    BANNED_WORDS,
    GRID3_NAMES,
    ClassLayout,
    Message,
    PatchContext,
    class_name,
    join_words,
    ranked,
)

NAME = "cen-layout"
VERSION = 1
THRESHOLD = 20
TOP_PER_CELL = 3
WHERE_SHARE = 0.8  # grid cells named for a class must hold this share of its pixels
WHOLE_IMAGE_CELLS = 6  # ... and needing this many cells or more means "across the whole image"
ELONGATED_NARROW = 5.0  # elongation from which a shape is "long and narrow"
FRAGMENTED = (0.25, 0.6)  # fragmentation from which a class is "patchy", then "scattered"

SYSTEM = (
    "You write descriptions of satellite images from a land-cover layout: which land-cover types "
    "are present, how much of the image each covers, where each lies on a 3 x 3 grid (top left, "
    "top, top right, left, centre, right, bottom left, bottom, bottom right) and what shape it "
    "takes. Reply with one paragraph of plain prose and nothing else. Open with the land-cover "
    "type that covers most of the image and where it lies, then cover the others from the "
    "largest to the smallest, saying where each one is and its shape: a body of water running "
    "north-south, a compact settlement, scattered patches of crop, an area touching the left "
    "edge. Use only the shapes and positions stated; do not invent features the layout does not "
    "give. Express amounts in varied words rather than exact numbers. End with a sentence that "
    "sums up the main theme of the scene. Be objective and direct, with no hedging and no remark "
    "on how the layout was obtained. Never use the following words, nor any word close to them "
    "in meaning: " + ", ".join(BANNED_WORDS) + "."
)

_NOUNS: dict[str, tuple[str, str]] = {
    "water": ("body of water", "bodies of water"),
    "developed area": ("built-up area", "built-up areas"),
}


def _percent(n: int, total: int) -> str:
    pct = round(100 * n / total) if total else 0
    return "under 1 %" if pct == 0 and n > 0 else f"{pct} %"


def where(ctx: PatchContext, c: int) -> list[str]:
    """Grid cells, in grid order, that hold most of class ``c``; empty = the whole image."""
    assert ctx.grid3 is not None
    col = ctx.grid3[:, c].tolist()
    total = sum(col)
    if total == 0:
        return []
    order = sorted(range(len(col)), key=lambda i: (-col[i], i))
    chosen: list[int] = []
    acc = 0
    for i in order:
        if acc >= WHERE_SHARE * total:
            break
        chosen.append(i)
        acc += col[i]
    if len(chosen) >= WHOLE_IMAGE_CELLS:
        return []
    return [GRID3_NAMES[i] for i in sorted(chosen)]


def shape_phrase(name: str, lay: ClassLayout) -> str:
    """Words for one class's :class:`ClassLayout`, e.g. "one elongated body of water ..."."""
    one, many = _NOUNS.get(name, ("patch", "patches"))
    if lay.orientation == "compact":
        adj, run = "compact", ""
    else:
        adj = "long, narrow" if lay.elongation >= ELONGATED_NARROW else "elongated"
        run = f" running {lay.orientation}"
    if lay.components <= 1:
        text = f"one {adj} {one}{run}"
    else:
        spread = ""
        if lay.fragmentation >= FRAGMENTED[1]:
            spread = ", widely scattered"
        elif lay.fragmentation >= FRAGMENTED[0]:
            spread = ", in a patchy layout"
        largest = f"{adj} and{run}" if run else adj
        text = (
            f"{lay.components} separate {many}{spread}, the largest one {largest}, holding "
            f"{round(100 * lay.largest_share)} % of it"
        )
    if len(lay.edges) == 4:
        text += ", touching all four edges"
    elif lay.edges:
        text += (
            f", touching the {join_words(list(lay.edges))} edge{'s' if len(lay.edges) > 1 else ''}"
        )
    else:
        text += ", away from the edges"
    return text


def context_json(ctx: PatchContext) -> dict[str, Any]:
    """What the prompt states: per class its share, place and shape; per grid cell its classes."""
    if ctx.grid3 is None:
        raise ValueError(
            f"{NAME} needs the 3 x 3 grid counts (PatchContext.grid3); build the context with "
            "grid3= or PatchContext.from_labels()"
        )
    total = int(ctx.overall.sum())
    classes: list[dict[str, Any]] = []
    for c, n in ranked(ctx.overall, THRESHOLD):
        name = class_name(c)
        lay = ctx.layout.get(c) if ctx.layout is not None else None
        classes.append(
            {
                "class": name,
                "percent": _percent(n, total),
                "where": where(ctx, c),
                "shape": shape_phrase(name, lay) if lay is not None else None,
            }
        )
    grid: dict[str, list[dict[str, str]]] = {}
    for i, cell in enumerate(GRID3_NAMES):
        counts = ctx.grid3[i]
        px = int(counts.sum())
        grid[cell] = [
            {"class": class_name(c), "percent": _percent(n, px)}
            for c, n in ranked(counts, THRESHOLD)[:TOP_PER_CELL]
        ]
    nodata = int(ctx.overall[0])
    return {
        "classes": classes,
        "grid": grid,
        "no_data": _percent(nodata, total) if nodata else None,
    }


def describe(ctx: PatchContext, seed: int, patch_id: str) -> dict[str, Any]:
    """:func:`context_json` with the registry's signature (nothing here depends on the seed)."""
    del seed, patch_id
    return context_json(ctx)


def user_text(ctx: PatchContext) -> str:
    """The user message: classes with share, shape and place, then the grid cells."""
    info = context_json(ctx)
    lines = ["Describe the satellite image with this land-cover layout."]
    if not info["classes"]:
        lines.append("The image has no land-cover data.")
    else:
        lines.append("Land-cover types, from most to least:")
    for item in info["classes"]:
        place = "in the " + join_words(item["where"]) if item["where"] else "across the whole image"
        shape = f"{item['shape']}; " if item["shape"] else ""
        lines.append(f"- {item['class']}, {item['percent']} of the image: {shape}{place}.")
    if info["no_data"]:
        lines.append(f"Pixels without land-cover data: {info['no_data']} of the image.")
    lines.append("Grid cells, each with its main land-cover types and their share of the cell:")
    land = (ctx.grid3[:, 1:].sum(axis=1) > 0).tolist() if ctx.grid3 is not None else []
    for (cell, items), has_land in zip(info["grid"].items(), land, strict=True):
        body = ", ".join(f"{it['class']} {it['percent']}" for it in items)
        if not body:
            body = "a few scattered pixels of land cover" if has_land else "no land-cover data"
        lines.append(f"- {cell}: {body}")
    return "\n".join(lines)


def build(ctx: PatchContext, seed: int, patch_id: str) -> list[Message]:
    """System + user messages of one patch (the style draws nothing: seed and id are unused)."""
    del seed, patch_id
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_text(ctx)}]
