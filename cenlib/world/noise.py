"""Smooth deterministic noise on a regular grid, in metres (value noise + fractal sums)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.interpolate import RectBivariateSpline

F32 = npt.NDArray[np.float32]


class Canvas:
    """Pixel-centre coordinates of an axis-aligned grid, in local metres (x east, y north).

    Noise is a function of position in metres, so features keep their real size whatever the
    grid's pixel shape (WorldCover pixels are 1/12000 degree, far from square in the Arctic).
    """

    def __init__(self, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], seed: int):
        self.xs = xs  # (W,) increasing
        self.ys = ys  # (H,) decreasing (row 0 is north)
        self.seed = seed
        self.shape = (len(ys), len(xs))

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def value_noise(self, scale_m: float, salt: int) -> F32:
        """Cubic-interpolated random lattice with spacing `scale_m`: values roughly N(0, 0.6)."""
        x0, x1 = float(self.xs.min()), float(self.xs.max())
        y0, y1 = float(self.ys.min()), float(self.ys.max())
        lx = np.arange(np.floor(x0 / scale_m) - 2, np.ceil(x1 / scale_m) + 3) * scale_m
        ly = np.arange(np.floor(y0 / scale_m) - 2, np.ceil(y1 / scale_m) + 3) * scale_m
        lattice = self.rng(salt).standard_normal((len(ly), len(lx)))
        spline = RectBivariateSpline(ly, lx, lattice, kx=3, ky=3)
        # RectBivariateSpline wants increasing coordinates; flip rows back afterwards.
        out = spline(self.ys[::-1], self.xs)[::-1]
        return np.asarray(out, dtype=np.float32)

    def fbm(self, scale_m: float, salt: int, octaves: int = 4, gain: float = 0.5) -> F32:
        """Fractal sum of value noise, normalised to zero mean and unit standard deviation."""
        total = np.zeros(self.shape, np.float32)
        amp = 1.0
        for o in range(octaves):
            total += amp * self.value_noise(scale_m / 2**o, salt * 97 + o)
            amp *= gain
        std = float(total.std()) or 1.0
        return (total - float(total.mean())) / std

    def grid(self) -> tuple[F32, F32]:
        """2-D x and y coordinate arrays (float32)."""
        xx, yy = np.meshgrid(self.xs.astype(np.float32), self.ys.astype(np.float32))
        return xx, yy
