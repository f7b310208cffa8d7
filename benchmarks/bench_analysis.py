"""Analysis kernel throughput: region counts against the reference scripts' route and bincount.

Counts per class for the whole patch and ChatEarthNet's five regions (our kernel counts all 15
regions of ``REGIONS`` in the same pass), on one core, over 256 x 256 class maps cut from the
demo world's land cover (patches repeated until the batch is well past the CPU caches):

- (a) the reference scripts' style: a ``collections.Counter`` over the patch's pixels and
  ``np.unique`` per region, in Python loops;
- (b) one plain ``np.bincount`` per patch over its pixels (whole patch only: no regions);
- the memory-bandwidth floor: one read pass (``labels.max()``) and one ``np.copy`` of the batch.

Then the layout descriptors (presence grids of 4 x 4 and 8 x 8 pixel blocks, scipy labelling).
Prints ratios, asserts nothing.
"""

from __future__ import annotations

import os

# One core: the kernel's one matrix product would otherwise spread over BLAS threads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _timing import best_of  # noqa: E402

from cenlib.analysis import CEN_REGIONS, layout, region_boxes, region_counts  # noqa: E402
from cenlib.classes import worldcover_to_index  # noqa: E402
from cenlib.world.landcover import paint  # noqa: E402
from cenlib.world.presets import preset_areas  # noqa: E402

PATCH = 256
BATCH = 4096  # 256 MiB of labels
PATCH_BYTES = PATCH * PATCH


def demo_patches() -> npt.NDArray[np.uint8]:
    """256 x 256 class maps cut (overlapping, stride 96) from the demo world's land cover."""
    tiles = []
    for area in preset_areas("demo"):
        codes, _ = paint(area, 0)
        idx = worldcover_to_index(codes)
        h, w = idx.shape
        for i in range(0, h - PATCH + 1, 96):
            for j in range(0, w - PATCH + 1, 96):
                tiles.append(idx[i : i + PATCH, j : j + PATCH])
    return np.stack(tiles)


def reference_style(labels: npt.NDArray[np.uint8]) -> list[dict[str, dict[int, int]]]:
    """Per patch: a Counter over all pixels, np.unique per region (the reference scripts)."""
    boxes = [region_boxes(PATCH)[r] for r in CEN_REGIONS]
    out = []
    for patch in labels:
        # Counter straight over the numpy array, as the scripts do: one numpy scalar per pixel
        stats = {"whole": {int(k): v for k, v in Counter(patch.flatten()).items()}}
        for name, (r0, r1, c0, c1) in zip(CEN_REGIONS, boxes, strict=True):
            values, counts = np.unique(patch[r0:r1, c0:c1], return_counts=True)
            stats[name] = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
        out.append(stats)
    return out


def bincount_each(labels: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.intp]]:
    return [np.bincount(p.ravel(), minlength=12) for p in labels]


def main() -> None:
    base = demo_patches()
    labels = np.resize(base, (BATCH, PATCH, PATCH))
    n = len(labels)
    region_counts(labels[:64])  # warm up: geometry tables, allocator
    t_kernel = best_of(lambda: region_counts(labels), 5)
    few = labels[:40]
    t_ref = best_of(lambda: reference_style(few), 1) * n / len(few)
    t_bc = best_of(lambda: bincount_each(labels), 3)
    t_read = best_of(lambda: labels.max(), 5)
    t_copy = best_of(lambda: labels.copy(), 5)
    gb = labels.nbytes / 1e9

    def rate(t: float) -> str:
        return f"{n / t:,.0f} patches/s ({1e6 * t / n:.1f} us/patch)"

    print(f"{n} patches of {PATCH} x {PATCH} ({labels.nbytes / 2**20:.0f} MiB), one core")
    print(f"(a) reference style (Counter + np.unique per region): {rate(t_ref)}")
    print(f"(b) one np.bincount per patch (whole patch only):     {rate(t_bc)}")
    print(f"kernel, whole + 5 ChatEarthNet regions (+ 9 more):   {rate(t_kernel)}")
    print(f"kernel vs (a): x{t_ref / t_kernel:,.0f}; vs (b): x{t_bc / t_kernel:.1f}")
    print(
        f"memory: read pass {gb / t_read:.1f} GB/s ({n / t_read:,.0f} patches/s), copy "
        f"{2 * gb / t_copy:.1f} GB/s moved; kernel reads {gb / t_kernel:.2f} GB/s = "
        f"{t_read / t_kernel:.0%} of the read pass"
    )
    lay_in = labels[: len(base)]
    classes = np.mean([len(np.unique(p)) for p in base])
    for factor in (4, 8):
        t_lay = best_of(lambda: layout(lay_in, factor), 3)  # noqa: B023
        print(
            f"layout, {factor} x {factor} presence blocks ({classes:.1f} classes per patch): "
            f"{len(lay_in) / t_lay:,.0f} patches/s ({1e6 * t_lay / len(lay_in):.0f} us/patch)"
        )


if __name__ == "__main__":
    main()
