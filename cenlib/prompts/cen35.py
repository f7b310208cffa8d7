"""``chatearthnet-3.5``: the semantics of ChatEarthNet's text-only (GPT-3.5) prompts.

What the model is told is exactly what the reference scripts computed:

- overall: every non-background class with >= 20 pixels, most pixels first;
- per region (``REGION_NAMES`` order): up to three classes with >= 20 pixels there, most first,
  each with p = class pixels / non-background pixels of the region, percent =
  ``int(round(p, 2) * 100)`` (truncation included: p = 0.29 gives 28), and the bin of that percent
  followed by a noun drawn from ``NOUNS``.

Two deliberate differences: ties are ordered by class index (the reference left them to an
unstable sort), and the nouns come from a generator seeded by (run seed, patch id) instead of the
unseeded ``random.choice``: the noun of rank ``i`` in region ``r`` is ``NOUNS[d[3 * r + i]]`` with
``d = draws(seed, patch_id, 15, 5)`` (a sha256 stream, see :func:`context.draws`).
A region with no class reaching the threshold gets a sentence saying so, where the reference left
a dangling one. The wording of both messages is ours.
"""

from __future__ import annotations

from typing import Any

from cenlib.prompts.context import (
    BANNED_WORDS,
    REGION_NAMES,
    Message,
    PatchContext,
    class_name,
    draws,
    join_words,
    ranked,
)

NAME = "chatearthnet-3.5"
VERSION = 1
THRESHOLD = 20  # pixels a class needs, overall or in a region, to be mentioned
TOP_PER_REGION = 3
NOUNS: tuple[str, ...] = ("fraction", "part", "portion", "amount", "quantity")
# (last percent of the bin, bin name), percent in 0..100.
BINS: tuple[tuple[int, str], ...] = (
    (9, "extra small"),
    (19, "small"),
    (49, "medium"),
    (79, "large"),
    (100, "extra large"),
)

BANNED_CLAUSE = (
    "Never use the following words, nor any word close to them in meaning: "
    + ", ".join(BANNED_WORDS)
    + "."
)

SYSTEM = (
    "You write descriptions of satellite images from land-cover statistics. Reply with one "
    "paragraph of plain prose and nothing else. Go through the image in the same spatial order as "
    "the statistics you receive, and link the parts so that the text reads as a single "
    "description. Say which land-cover type dominates the image and where it lies. Within each "
    "part, mention the land-cover types from the largest area to the smallest. Vary the words "
    "you use for amounts rather than repeating one phrase. Finish with a sentence that sums up "
    "the main theme of the scene. Be objective and direct: state what is there, without hedging "
    "or speculation and without any remark on how the statistics were produced. " + BANNED_CLAUSE
)


def reference_percent(count: int, total: int) -> int:
    """``int(round(p, 2) * 100)`` exactly as the reference evaluated it.

    There p was a numpy float64, whose ``round`` is ``rint(p * 100) / 100`` (halves to even on the
    scaled value), not Python's correctly rounded ``round``: 50 of 10,000 pixels gives 0, not 1.
    Python's ``round(x)`` without digits is the same half-to-even ``rint``, so plain floats
    reproduce it bit for bit without a numpy scalar per item.
    """
    p = count / total
    return int(round(p * 100.0) / 100.0 * 100.0)


def percent_bin(percent: int) -> str:
    """The reference's size word for a percent in 0..100."""
    for last, name in BINS:
        if 0 <= percent <= last:
            return name
    raise ValueError(f"percent must be in 0..100; got {percent}")


def _regions(ctx: PatchContext, seed: int, patch_id: str) -> list[list[dict[str, Any]]]:
    d = draws(seed, patch_id, len(REGION_NAMES) * TOP_PER_REGION, len(NOUNS))
    out: list[list[dict[str, Any]]] = []
    for r, counts in enumerate(ctx.regions.tolist()):
        total = sum(counts[1:])
        items = []
        for i, (c, n) in enumerate(ranked(counts, THRESHOLD)[:TOP_PER_REGION]):
            pct = reference_percent(n, total)
            items.append(
                {
                    "class": class_name(c),
                    "percent": pct,
                    "bin": percent_bin(pct),
                    "noun": NOUNS[d[TOP_PER_REGION * r + i]],
                }
            )
        out.append(items)
    return out


def _has_land(ctx: PatchContext) -> list[bool]:
    """Per region, whether it has any land-cover pixel (background excluded)."""
    land: list[bool] = (ctx.regions[:, 1:].sum(axis=1) > 0).tolist()
    return land


def context_json(ctx: PatchContext, seed: int, patch_id: str) -> dict[str, Any]:
    """What the prompt states, as JSON: overall class names and, per region, its top classes.

    ``{"overall": [name, ...], "regions": {"top left": [{"class": name, "percent": int,
    "bin": "large"}, ...], "top right": [...], "bottom left": [...], "bottom right": [...],
    "middle": [...]}, "scattered": [name, ...]}``; a region with nothing to say has an empty
    list, and ``scattered`` names those of them that still hold a few pixels of land cover (the
    prompt says so instead of "no land-cover data": a caption written from this JSON can too).
    """
    regions = _regions(ctx, seed, patch_id)
    return {
        "overall": [class_name(c) for c, _ in ranked(ctx.overall, THRESHOLD)],
        "regions": {
            name: [{k: it[k] for k in ("class", "percent", "bin")} for it in items]
            for name, items in zip(REGION_NAMES, regions, strict=True)
        },
        "scattered": [
            name
            for name, items, land in zip(REGION_NAMES, regions, _has_land(ctx), strict=True)
            if land and not items
        ],
    }


def _region_sentence(name: str, items: list[dict[str, Any]], has_land: bool) -> str:
    if not items:
        if not has_land:
            return f"The {name} part has no land-cover data."
        return f"The {name} part holds only a few scattered pixels of land cover."
    parts = [f"{it['class']} ({it['bin']} {it['noun']})" for it in items]
    if len(parts) == 1:
        return f"The {name} part mainly contains {parts[0]}."
    return (
        f"The {name} part mainly contains, from the largest area to the smallest: "
        f"{join_words(parts)}."
    )


def user_text(ctx: PatchContext, seed: int, patch_id: str) -> str:
    """The user message: overall classes, then the five regions in order."""
    overall = [class_name(c) for c, _ in ranked(ctx.overall, THRESHOLD)]
    lines = ["Describe the satellite image summarised by these land-cover statistics."]
    if overall:
        lines.append(
            "Land-cover types over the whole image, from most to least: " + ", ".join(overall) + "."
        )
    else:
        lines.append("The image as a whole has no land-cover data.")
    for name, items, has_land in zip(
        REGION_NAMES, _regions(ctx, seed, patch_id), _has_land(ctx), strict=True
    ):
        lines.append(_region_sentence(name, items, has_land))
    return "\n".join(lines)


def build(ctx: PatchContext, seed: int, patch_id: str) -> list[Message]:
    """System + user messages of one patch."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user_text(ctx, seed, patch_id)},
    ]
