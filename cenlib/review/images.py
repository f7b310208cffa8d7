"""PNG renderings of a patch for the review page: true colour and the land-cover map.

Pure kernels (numpy in, PNG bytes out); :mod:`cenlib.review.patches` reads the arrays from the
store. True colour uses one fixed percentile stretch, the same three bounds for red, green and
blue, so colours keep their balance from patch to patch.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

from cenlib.classes import palette_rgb

STRETCH = (2.0, 98.0)  # percentiles of the valid reflectance mapped to black and white
NODATA = -32768  # the store's int16 fill value of reflectance


def stretch_rgb(
    refl: npt.NDArray[np.int16], bands: list[str], percentiles: tuple[float, float] = STRETCH
) -> npt.NDArray[np.uint8]:
    """(y, x, 3) uint8 RGB from (band, y, x) int16 reflectance; no data is black."""
    try:
        idx = [bands.index(b) for b in ("red", "green", "blue")]
    except ValueError as e:
        raise ValueError(
            f"the store's bands {bands} lack red, green or blue; ingest them to review images"
        ) from e
    rgb = np.moveaxis(refl[idx], 0, -1).astype(np.float32)
    valid = (refl[idx] != NODATA).all(axis=0)
    if not valid.any():
        return np.zeros(rgb.shape, np.uint8)
    lo, hi = np.percentile(rgb[valid], percentiles)
    scaled = (rgb - lo) / max(float(hi - lo), 1.0)
    out: npt.NDArray[np.uint8] = (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)
    out[~valid] = 0
    return out


def rgb_png(refl: npt.NDArray[np.int16], bands: list[str]) -> bytes:
    """True colour of a patch as PNG bytes."""
    return _png(Image.fromarray(stretch_rgb(refl, bands), "RGB"))


def land_cover_png(labels: npt.NDArray[np.uint8]) -> bytes:
    """The land-cover map (class indices 0..11) as a paletted PNG in ChatEarthNet's colours."""
    img = Image.fromarray(np.asarray(labels, np.uint8), "P")
    img.putpalette(palette_rgb().ravel().tolist())
    return _png(img)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return buf.getvalue()
