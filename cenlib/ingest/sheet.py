"""A contact sheet of ingested patches: true colour next to land cover, for a quick look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cenlib.classes import CLASSES, palette_rgb
from cenlib.ingest.store import array, open_group


def true_colour(refl: npt.NDArray[np.int16], bands: list[str]) -> npt.NDArray[np.float32]:
    """(y, x, 3) RGB in 0..1 from int16 reflectance * 10000, stretched to 0..0.3 reflectance."""
    idx = [bands.index(b) for b in ("red", "green", "blue")]
    rgb = refl[idx].astype(np.float32) / 10000
    rgb[refl[idx] == -32768] = 0
    return np.clip(np.moveaxis(rgb, 0, -1) / 0.3, 0, 1)


def contact_sheet(url: str, out: Path, n: int = 8) -> Path | None:
    """Up to `n` ok patches, evenly spread over the store; None if none has RGB bands or is ok."""
    g = open_group(url)
    bands = [str(b) for b in np.asarray(array(g, "band")[:])]
    if not {"red", "green", "blue"} <= set(bands):
        return None
    status = np.asarray(array(g, "status")[:])
    ok = np.flatnonzero(status == "ok")
    if not len(ok):
        return None
    pick = ok[np.linspace(0, len(ok) - 1, min(n, len(ok))).round().astype(int)]
    ids = np.asarray(array(g, "patch_id")[:])
    days = np.asarray(array(g, "datetime")[:])
    pal = palette_rgb()
    # A Figure of its own (no pyplot): no backend switch, nothing left open, and a notebook
    # that imports cenlib keeps its inline plots.
    fig = Figure(figsize=(2.2 * len(pick), 5.0))
    axes = fig.subplots(2, len(pick), squeeze=False)
    for col, p in enumerate(pick):
        refl = np.asarray(array(g, "reflectance")[int(p)])
        lc = np.asarray(array(g, "land_cover")[int(p)])
        axes[0, col].imshow(true_colour(refl, bands))
        axes[0, col].set_title(f"{ids[p]}\n{str(days[p])[:10]}", fontsize=7)
        axes[1, col].imshow(pal[lc])
        for ax in axes[:, col]:
            ax.set_axis_off()
    handles = [Patch(color=f"#{c.color}", label=c.name) for c in CLASSES[1:]]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.suptitle("Sentinel-2 true colour (top) and ChatEarthNet land cover (bottom)", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
