"""8-bit images of a patch, as ChatEarthNet shipped them: RGB, two false-colour groups and the
land-cover map in ChatEarthNet's palette.

Reflectance becomes 8 bits by a fixed stretch per band, the same for every patch (so images are
comparable): the band's ``low`` and ``high`` percentiles, measured once over a sample of the
store's patches, map to 0 and 255; no-data pixels (-32768) are 0.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

from cenlib.classes import palette_rgb

NODATA = -32768
# Image name -> the store's band names, in channel order (Sentinel-2 B04/B03/B02, B05/B06/B07,
# B08/B11/B12); a group is written when the store has all of its bands.
GROUPS: Mapping[str, tuple[str, str, str]] = {
    "rgb": ("red", "green", "blue"),
    "rededge": ("rededge1", "rededge2", "rededge3"),
    "nir_swir": ("nir", "swir16", "swir22"),
}

Stretch = dict[str, tuple[float, float]]  # band -> (value at 0, value at 255)


def measure_stretch(
    refl: npt.NDArray[np.int16], bands: Sequence[str], percentiles: tuple[float, float]
) -> Stretch:
    """Per band, the ``percentiles`` of the valid pixels of ``refl`` ``(n, bands, y, x)``."""
    out: Stretch = {}
    for i, b in enumerate(bands):
        v = refl[:, i][refl[:, i] != NODATA]
        if v.size == 0:
            out[b] = (0.0, 1.0)
            continue
        lo, hi = np.percentile(v, percentiles)
        out[b] = (float(lo), float(max(hi, lo + 1)))
    return out


def to_8bit(
    refl: npt.NDArray[np.int16], bands: Sequence[str], group: Sequence[str], stretch: Stretch
) -> npt.NDArray[np.uint8]:
    """``(y, x, 3)`` uint8 of one patch's ``(bands, y, x)`` reflectance for a band group."""
    chans = []
    for b in group:
        x = refl[list(bands).index(b)]
        lo, hi = stretch[b]
        v = np.clip((x.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)
        v = np.rint(v).astype(np.uint8)
        v[x == NODATA] = 0
        chans.append(v)
    return np.stack(chans, axis=-1)


def groups_of(bands: Sequence[str]) -> list[str]:
    """The image groups the store's bands allow."""
    return [name for name, g in GROUPS.items() if set(g) <= set(bands)]


def png(rgb: npt.NDArray[np.uint8], level: int = 6) -> bytes:
    """PNG bytes of an ``(y, x, 3)`` uint8 image at zlib ``level`` (deterministic: no
    timestamps)."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "PNG", optimize=False, compress_level=level)
    return buf.getvalue()


def label_png(classes: npt.NDArray[np.uint8], level: int = 6) -> bytes:
    """PNG bytes of a ``(y, x)`` map of ChatEarthNet class indices, in its palette (a paletted
    PNG: the class index is the pixel value, the palette gives the colour)."""
    img = Image.fromarray(classes.astype(np.uint8), "P")
    img.putpalette(palette_rgb().reshape(-1).tolist())
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False, compress_level=level)
    return buf.getvalue()
