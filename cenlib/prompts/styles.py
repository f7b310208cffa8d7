"""Prompt styles: named, versioned, deterministic builders of OpenAI chat messages.

A style turns one patch's counts (:class:`PatchContext`) into chat messages. Same style, context,
run seed and patch id = same messages, in any process. Styles are addressed by name
(``chatearthnet-3.5``) or by versioned name (``chatearthnet-3.5@1``); the version changes
whenever the text a model receives changes, so captions can record what they were asked.

- ``chatearthnet-3.5``: ChatEarthNet's text-only prompt semantics (see :mod:`.cen35`).
- ``chatearthnet-4v``: ChatEarthNet's vision prompt, map as PNG, up to 4 patches per request.
- ``cen-layout``: text-only, with positions on a 3 x 3 grid and shapes of the classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cenlib.prompts import cen4v, cen35, layout
from cenlib.prompts.context import (
    BANNED_WORDS,
    EDGES,
    GRID3_NAMES,
    REGION_NAMES,
    ClassLayout,
    Message,
    PatchContext,
    patch_seed,
)

__all__ = [
    "BANNED_WORDS",
    "EDGES",
    "GRID3_NAMES",
    "REGION_NAMES",
    "STYLES",
    "ClassLayout",
    "Message",
    "PatchContext",
    "PromptStyle",
    "build_messages",
    "context_json",
    "get_style",
    "patch_seed",
    "preview",
    "single_answer",
]

Builder = Callable[[PatchContext, int, str], list[Message]]
BatchBuilder = Callable[[Sequence[PatchContext], int, Sequence[str]], list[Message]]
Describer = Callable[[PatchContext, int, str], dict[str, Any]]
Splitter = Callable[[str, int], list[str] | None]


def single_answer(text: str, n: int) -> list[str] | None:
    """The splitter of a style that puts one patch in a request: the answer is the caption.

    ``None`` (cannot be split) for ``n != 1`` or an empty answer, as :func:`cen4v.split_answer`.
    """
    body = text.strip()
    return [body] if n == 1 and body else None


@dataclass(frozen=True)
class PromptStyle:
    """One style: how to build its messages, the JSON of what they state (the facts a prompt
    record carries) and, for styles that put several patches in a request, how to build such a
    request and split its answer."""

    name: str
    version: int
    build: Builder
    describe: Describer
    max_batch: int = 1  # patches one request may carry
    needs_labels: bool = False  # sends the class map as an image
    needs_grid: bool = False  # reads PatchContext.grid3 (and layout when present)
    build_batch: BatchBuilder | None = None  # messages for 1..max_batch patches; None: one only
    split_answer: Splitter = single_answer  # one caption per patch of an answer, or None
    # What the verify stage holds a caption of this style to (the prompt's own instructions):
    banned: tuple[str, ...] = BANNED_WORDS  # words the prompt forbids
    numbers_allowed: bool = False  # whether the prompt gives numbers a caption may repeat
    caption_words: tuple[int, int] = (25, 400)  # bounds on a caption's length, in words

    @property
    def versioned(self) -> str:
        """``name@version``, to record with every caption."""
        return f"{self.name}@{self.version}"


STYLES: Mapping[str, PromptStyle] = {
    s.name: s
    for s in (
        PromptStyle(cen35.NAME, cen35.VERSION, cen35.build, cen35.context_json),
        PromptStyle(
            cen4v.NAME,
            cen4v.VERSION,
            cen4v.build,
            cen4v.describe,
            max_batch=cen4v.MAX_BATCH,
            needs_labels=True,
            build_batch=cen4v.build_batch_messages,
            split_answer=cen4v.split_answer,
            numbers_allowed=True,  # its statistics are percents
        ),
        PromptStyle(
            layout.NAME,
            layout.VERSION,
            layout.build,
            layout.describe,
            needs_grid=True,
        ),
    )
}


def get_style(style: str) -> PromptStyle:
    """The style named ``name`` or ``name@version`` (the version must be the current one)."""
    name, _, version = style.partition("@")
    found = STYLES.get(name)
    if found is None:
        raise KeyError(f"unknown prompt style {style!r}; known: {', '.join(STYLES)}")
    if version and version != str(found.version):
        raise KeyError(
            f"prompt style {style!r}: this cenlib builds only {found.versioned}; "
            "captions made with another version cannot be rebuilt by it"
        )
    return found


def build_messages(style: str, ctx: PatchContext, seed: int, patch_id: str) -> list[Message]:
    """OpenAI chat messages for one patch in ``style``."""
    return get_style(style).build(ctx, seed, patch_id)


def context_json(ctx: PatchContext, seed: int, patch_id: str) -> dict[str, Any]:
    """``chatearthnet-3.5``'s statement of a patch: ``{"overall": [...], "regions": {...}}``."""
    return cen35.context_json(ctx, seed, patch_id)


def preview(style: str, ctx: PatchContext, seed: int, patch_id: str) -> dict[str, Any]:
    """What ``cen prompt preview`` prints for one patch: the style's JSON plus ``"messages"``."""
    s = get_style(style)
    return {**s.describe(ctx, seed, patch_id), "messages": s.build(ctx, seed, patch_id)}
