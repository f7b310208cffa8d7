"""`cen prompt preview`: what a model would be asked for some class maps, before paying for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cenlib import analysis
from cenlib.classes import CLASS_NAMES, NUM_CLASSES
from cenlib.config import PROMPT_STYLES
from cenlib.errors import CenError
from cenlib.prompts.styles import ClassLayout, PatchContext, get_style, preview


class PreviewError(CenError, ValueError):
    """Input the preview cannot use; the message says what to fix."""


def load_labels(path: Path) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """An ``(n, S, S)`` uint8 array of class indices from an .npy file, checked."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PreviewError(f"{path}: cannot read as .npy ({e})") from e
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] % 2:
        raise PreviewError(f"{path}: need shape (n, S, S) with even S, got {a.shape}")
    if a.dtype != np.uint8:
        raise PreviewError(f"{path}: need dtype uint8 class indices, got {a.dtype}")
    if a.size and int(a.max()) >= NUM_CLASSES:
        raise PreviewError(
            f"{path}: values must be ChatEarthNet class indices 0..{NUM_CLASSES - 1} "
            f"({', '.join(CLASS_NAMES)}), found {int(a.max())}"
        )
    out: np.ndarray[Any, np.dtype[np.uint8]] = a
    return out


def preview_labels(path: Path, style: str, seed: int) -> Iterator[dict[str, Any]]:
    """One preview object per map (its index is its patch id, which seeds the wording)."""
    name = style.partition("@")[0]
    if name not in PROMPT_STYLES:
        raise PreviewError(f"unknown style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    st = get_style(style)
    maps = load_labels(path)
    counts = analysis.region_counts(maps)
    # analysis.layout, not `from cenlib.analysis import layout`: that reads as the module
    # cenlib.analysis.layout to import-linter, which forbids it here.
    lay = analysis.layout(maps) if st.needs_grid else None
    for i in range(len(maps)):
        per: dict[int, ClassLayout] | None = None
        if lay is not None:
            named = analysis.patch_layout(lay[i])
            per = {CLASS_NAMES.index(k): ClassLayout.from_dict(v) for k, v in named.items()}
        ctx = PatchContext.from_counts(
            counts[i], maps.shape[1], layout=per, labels=maps[i] if st.needs_labels else None
        )
        yield preview(style, ctx, seed, str(i))
