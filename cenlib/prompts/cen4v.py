"""``chatearthnet-4v``: ChatEarthNet's vision prompts, up to four patches per request.

Per patch the model gets the same two tables as the reference: per class, its coverage of each
region (class pixels / region pixels, background included, as a percent with two decimals), and
per region the class shares to two decimals, largest first; plus the land-cover map in
ChatEarthNet's palette, downsampled by 2 (every second pixel, as the reference did) and sent as a
PNG image part. When the context carries the true-colour image, it is attached after its map.

Classes with equal pixels are listed by class index. The answer is one paragraph per patch
prefixed ``Image k:``; :func:`split_answer` splits it and refuses (``None``) when it cannot
account for exactly one caption per patch, so the caller can retry the patches one by one.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from cenlib.classes import CLASS_NAMES, NUM_CLASSES
from cenlib.prompts.context import (
    BANNED_WORDS,
    REGION_NAMES,
    Message,
    PatchContext,
    class_name,
    join_words,
    ranked,
)

NAME = "chatearthnet-4v"
VERSION = 1
MAX_BATCH = 4
DOWNSAMPLE = 2

# ChatEarthNet's colours (its generation scripts), not ESA's legend in cenlib.classes: the model
# is told this legend, and ChatEarthNet's released maps use it. Index = class index.
PALETTE: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((0, 0, 0), "black"),
    ((0, 0, 255), "blue"),
    ((255, 0, 0), "red"),
    ((0, 192, 0), "dark green"),
    ((200, 170, 120), "brown"),
    ((0, 255, 0), "green"),
    ((255, 255, 0), "yellow"),
    ((128, 128, 128), "grey"),
    ((255, 255, 255), "white"),
    ((0, 255, 255), "cyan"),
    ((255, 0, 255), "pink"),
    ((128, 0, 128), "purple"),
)
assert len(PALETTE) == NUM_CLASSES


def palette_rgb() -> npt.NDArray[np.uint8]:
    """(12, 3) uint8 ChatEarthNet map colours indexed by class."""
    return np.array([rgb for rgb, _ in PALETTE], dtype=np.uint8)


_LEGEND = "; ".join(
    f"{name} {list(rgb)}: {CLASS_NAMES[i]}" for i, (rgb, name) in enumerate(PALETTE) if i > 0
)
_ORDINALS = ("one", "two", "three", "four")

SYSTEM = (
    "You describe satellite scenes from land-cover maps. In each map a colour stands for a "
    f"land-cover type: {_LEGEND}; black marks pixels without data. Each request holds one or "
    "more independent maps, numbered in the order they are attached, together with statistics "
    "for each of them. Rules: "
    "1) Write one long paragraph per image, starting with 'Image 1:', 'Image 2:' and so on, "
    "and nothing else. "
    "2) Keep the images apart: never compare them or refer from one to another. "
    "3) Never mention colours; speak of the land-cover type a colour stands for. "
    "4) Give a shape to water, developed area and crop wherever they are present (a winding "
    "river, a round lake, a compact town, a grid of rectangular fields, and so on). "
    "5) Mention only the land-cover types listed in that image's statistics. "
    "6) Check the shape and position of developed area, water, grass, tree, shrub, wetland and "
    "crop against the map. "
    "7) Read the statistics as one whole scene instead of reciting them region by region. "
    "8) Describe each land-cover type in turn, then end with the main theme of the image. "
    "9) Be objective: no hedging, no remarks on the map or the statistics themselves, and none "
    "of these words or any word close to them in meaning: " + ", ".join(BANNED_WORDS) + "."
)


def coverage(ctx: PatchContext) -> dict[str, dict[str, float]]:
    """Per class present, its share of each region's pixels (background included), 0..1.

    Classes come most pixels first; every region is listed, zeros included, as the reference did.
    """
    px = ctx.region_pixels.tolist()
    regions = ctx.regions.tolist()
    return {
        class_name(c): {
            name: (regions[r][c] / px[r] if px[r] else 0.0) for r, name in enumerate(REGION_NAMES)
        }
        for c, _ in ranked(ctx.overall)
    }


def shares(ctx: PatchContext) -> dict[str, list[tuple[str, float]]]:
    """Per region, ``(class, share of the region's pixels)`` of the classes present, most first."""
    px = ctx.region_pixels.tolist()
    return {
        name: [(class_name(c), n / px[r]) for c, n in ranked(ctx.regions[r])]
        for r, name in enumerate(REGION_NAMES)
    }


def context_json(ctx: PatchContext) -> dict[str, Any]:
    """The statistics the prompt states, rounded as stated (for previews)."""
    return {
        "coverage": {
            c: {r: round(v * 100, 2) for r, v in regs.items()} for c, regs in coverage(ctx).items()
        },
        "shares": {
            r: [{"class": c, "share": round(v, 2)} for c, v in items]
            for r, items in shares(ctx).items()
        },
    }


def describe(ctx: PatchContext, seed: int, patch_id: str) -> dict[str, Any]:
    """:func:`context_json` with the registry's signature (nothing here depends on the seed)."""
    del seed, patch_id
    return context_json(ctx)


def _stats_text(ctx: PatchContext, k: int) -> str:
    lines = [f"Image {k}: share of each part of the image covered by each land-cover type."]
    cov = coverage(ctx)
    if not cov:
        lines.append("(no land-cover data anywhere in this image)")
    for c, regs in cov.items():
        lines.append(f"{c}: " + ", ".join(f"{r} part {v:.2%}" for r, v in regs.items()))
    lines.append(f"Image {k}: land-cover types of each part, largest first, as fractions.")
    for r, items in shares(ctx).items():
        body = ", ".join(f"{c} {v:.2f}" for c, v in items) if items else "no land-cover data"
        lines.append(f"{r} part: {body}")
    return "\n".join(lines)


def png_bytes(image: npt.NDArray[np.uint8]) -> bytes:
    """Lossless PNG of an (h, w, 3) uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def render_map(labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The class map in ChatEarthNet's colours, downsampled by keeping every second pixel."""
    return palette_rgb()[labels[::DOWNSAMPLE, ::DOWNSAMPLE]]


def _image_part(image: npt.NDArray[np.uint8]) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")
    return {"type": "image_url", "image_url": {"url": url}}


def build_batch_messages(
    ctxs: Sequence[PatchContext], seed: int = 0, patch_ids: Sequence[str] = ()
) -> list[Message]:
    """System + user messages for 1..4 patches; the user message holds text, then the images.

    Images go in patch order: map of image 1, its true-colour image if the context has one, map of
    image 2, ... ``seed`` and ``patch_ids`` do not change the text (the style draws nothing).
    """
    del seed, patch_ids
    n = len(ctxs)
    if not 1 <= n <= MAX_BATCH:
        raise ValueError(f"{NAME} takes 1 to {MAX_BATCH} patches per request; got {n}")
    missing = [k for k, ctx in enumerate(ctxs, 1) if ctx.labels is None]
    if missing:
        raise ValueError(
            f"{NAME} sends the land-cover map as an image, but patch(es) {missing} of the batch "
            "have no labels in their PatchContext; build it with labels= or from_labels()"
        )
    with_rgb = [ctx.rgb is not None for ctx in ctxs]
    if n == 1:
        head = "You are given one image: its land-cover map is attached"
        head += ", followed by its true-colour satellite picture." if with_rgb[0] else "."
    else:
        head = (
            f"You are given {_ORDINALS[n - 1]} images; their land-cover maps are attached in order"
        )
        if all(with_rgb):
            head += ", each followed by its true-colour satellite picture."
        elif any(with_rgb):
            pics = join_words([str(k) for k, w in enumerate(with_rgb, 1) if w])
            head += f"; the maps of images {pics} are each followed by a true-colour picture."
        else:
            head += "."
    blocks = [head] + [_stats_text(ctx, k) for k, ctx in enumerate(ctxs, 1)]
    if n == 1:
        blocks.append("Write one paragraph, starting with 'Image 1:'.")
    else:
        blocks.append(
            f"Write {_ORDINALS[n - 1]} separate paragraphs, each starting with its number: "
            "'Image 1:', 'Image 2:' and so on."
        )
    content: list[dict[str, Any]] = [{"type": "text", "text": "\n\n".join(blocks)}]
    for ctx in ctxs:
        assert ctx.labels is not None
        content.append(_image_part(render_map(ctx.labels)))
        if ctx.rgb is not None:
            content.append(_image_part(ctx.rgb))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


def build(ctx: PatchContext, seed: int, patch_id: str) -> list[Message]:
    """Messages for a single patch (a batch of one)."""
    return build_batch_messages([ctx], seed, [patch_id])


_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
}
_NUM = r"(\d+|one|two|three|four)"
_EMPH = r"(?:\*\*|__|\*|_)?"
# A marker opens a line: optional heading/list/bold decoration, then "Image 2" (or "Picture 2",
# "Image #2", "Description of image 2", "Second image"), then optional ":", ".", ")" or a dash.
_END = r"[:.)\-\u2013\u2014]"
_MARKER = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:[-*+>][ \t]+)?(?:\d+[.)][ \t]+)?" + _EMPH + r"[ \t]*"
    r"(?:(?:description|caption)[ \t]+(?:of|for)[ \t]+(?:the[ \t]+)?)?"
    r"(?:(?:image|picture|map)[ \t]*(?:#|no\.?)?[ \t]*" + _NUM + r"|"
    r"(first|second|third|fourth)[ \t]+(?:image|picture|map))"
    # The label must end: bold closes, punctuation follows, or the line ends. "Image 1 shows a
    # river" is prose, not a marker.
    r"[ \t]*(?:(?:\*\*|__|\*|_)[ \t]*(?:" + _END + r")?|" + _END + r"|(?=[ \t]*$))"
    r"[ \t]*" + _EMPH + r"[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
# Fallback when no "Image k" marker is found: a bare numbered list ("1.", "**2)**").
_NUMBERED = re.compile(r"^[ \t]*" + _EMPH + r"(\d+)[.)]" + _EMPH + r"[ \t]+", re.MULTILINE)
_RULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$", re.MULTILINE)


def _number(m: re.Match[str]) -> int:
    word = next(g for g in m.groups() if g is not None).lower()
    return int(word) if word.isdigit() else _NUMBER_WORDS[word]


def _clean(part: str) -> str:
    return _RULE.sub("", part).strip()


def _split_on(
    text: str, marks: list[re.Match[str]], numbers: list[int], n: int
) -> list[str] | None:
    if numbers != list(range(1, n + 1)):
        return None
    parts = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        parts.append(_clean(text[m.end() : end]))
    return parts if all(parts) else None


def split_answer(text: str, n: int) -> list[str] | None:
    """One caption per patch from a batched answer, or ``None`` when it cannot be validated.

    Accepts markers such as ``Image 2:``, ``**Image 2:**``, ``### Image 2``, ``Image #2 -``,
    ``2. **Image 2**:``, ``Second image:`` and, when no such marker exists, a bare numbered
    list ``1.`` .. ``n.``. The markers must be exactly 1..n in order and every caption non-empty;
    text before the first marker (a preamble) is dropped. For ``n == 1`` an unmarked answer is
    the caption.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    marks = list(_MARKER.finditer(text))
    if marks:
        return _split_on(text, marks, [_number(m) for m in marks], n)
    numbered = list(_NUMBERED.finditer(text))
    if numbered and n > 1:
        return _split_on(text, numbered, [int(m.group(1)) for m in numbered], n)
    if n == 1:
        body = _clean(text)
        return [body] if body else None
    return None
