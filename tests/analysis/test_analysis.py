"""Analysis kernels (property tests against a plain per-patch reference), layout descriptors, and
the Dask stage on a real Zarr store and LocalCluster."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from distributed import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cenlib.analysis import (
    CEN_REGIONS,
    GRID3,
    LAYOUT_FIELDS,
    REGIONS,
    analyze_store,
    fractions,
    layout,
    patch_layout,
    region_boxes,
    region_counts,
    region_index,
)
from cenlib.analysis.kernels import region_counts_bincount
from cenlib.analysis.layout import edge_names, orientation_name
from cenlib.analysis.read import slug
from cenlib.classes import CLASS_NAMES, NUM_CLASSES
from cenlib.ingest.store import ShardData, StoreSpec, create_or_open, open_group, write_shard

Labels = npt.NDArray[np.uint8]
MIRROR_LR = {
    "top left": "top right",
    "bottom left": "bottom right",
    "left": "right",
    "top left corner": "top right corner",
    "bottom left corner": "bottom right corner",
}
MIRROR_LR.update({v: k for k, v in MIRROR_LR.items()})
MIRROR_UD = {
    "top left": "bottom left",
    "top right": "bottom right",
    "top": "bottom",
    "top left corner": "bottom left corner",
    "top right corner": "bottom right corner",
}
MIRROR_UD.update({v: k for k, v in MIRROR_UD.items()})


def reference_counts(labels: Labels) -> npt.NDArray[np.int64]:
    """The straightforward route: a Counter over each region's pixels, patch by patch."""
    size = labels.shape[1]
    out = np.zeros((len(labels), len(REGIONS), NUM_CLASSES), np.int64)
    for i, patch in enumerate(labels):
        for r, (r0, r1, c0, c1) in enumerate(region_boxes(size).values()):
            for k, v in Counter(patch[r0:r1, c0:c1].ravel().tolist()).items():
                out[i, r, k] = v
    return out


def make_maps(seed: int, size: int, kind: str, n: int = 3) -> Labels:
    """Random or structured maps: noise, stripes, blocks, one class, all background."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, NUM_CLASSES, (n, size, size), dtype=np.uint8)
    if kind == "stripes":
        width = int(rng.integers(1, max(2, size // 3)))
        band = (np.arange(size) // width) % NUM_CLASSES
        maps = np.broadcast_to(band, (n, size, size)).astype(np.uint8)
        return np.ascontiguousarray(maps.transpose(0, 2, 1) if seed % 2 else maps)
    if kind == "blocks":
        cells = rng.integers(0, NUM_CLASSES, (n, 4, 4), dtype=np.uint8)
        rep = -(-size // 4)
        return np.ascontiguousarray(cells.repeat(rep, 1).repeat(rep, 2)[:, :size, :size])
    if kind == "single":
        return np.full((n, size, size), int(rng.integers(1, NUM_CLASSES)), np.uint8)
    return np.zeros((n, size, size), np.uint8)


KINDS = st.sampled_from(["noise", "stripes", "blocks", "single", "background"])
# 64/128/256 take the bit-packed route; the others the bincount route.
SIZES = st.sampled_from([64, 128, 256, 2, 4, 6, 10, 96])


def test_region_boxes_for_chatearthnet() -> None:
    b = region_boxes(256)
    assert b["whole"] == (0, 256, 0, 256)
    assert b["top left"] == (0, 128, 0, 128)
    assert b["bottom right"] == (128, 256, 128, 256)
    assert b["middle"] == (64, 192, 64, 192)  # rows and columns 64..191
    assert b["top"] == (0, 85, 85, 171)
    assert b["left"] == (85, 171, 0, 85)
    assert b["right"] == (85, 171, 171, 256)
    assert b["centre"] == (85, 171, 85, 171)
    assert b["bottom right corner"] == (171, 256, 171, 256)
    assert set(CEN_REGIONS) <= set(REGIONS) and set(GRID3) <= set(REGIONS)
    assert region_index(CEN_REGIONS) == [1, 2, 3, 4, 5]
    # the 3 x 3 cells tile the patch
    area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in (b[g] for g in GRID3))
    assert area == 256 * 256


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), size=SIZES, kind=KINDS)
def test_kernel_equals_reference(seed: int, size: int, kind: str) -> None:
    labels = make_maps(seed, size, kind)
    ref = reference_counts(labels)
    got = region_counts(labels)
    assert got.dtype == np.int32 and got.shape == (3, len(REGIONS), NUM_CLASSES)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(region_counts_bincount(labels), ref)
    areas = [(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in region_boxes(size).values()]
    np.testing.assert_array_equal(got.sum(axis=2), np.broadcast_to(areas, (3, len(REGIONS))))


def test_kernel_on_a_long_batch_and_views() -> None:
    """More patches than one inner chunk, a non-contiguous view, and an empty batch."""
    labels = make_maps(7, 256, "noise", n=19)
    np.testing.assert_array_equal(region_counts(labels), reference_counts(labels))
    view = labels[::2]
    np.testing.assert_array_equal(region_counts(view), reference_counts(view))
    assert region_counts(labels[:0]).shape == (0, len(REGIONS), NUM_CLASSES)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=SIZES, kind=KINDS)
def test_fractions_sum_to_one_over_land(seed: int, size: int, kind: str) -> None:
    counts = region_counts(make_maps(seed, size, kind))
    frac = fractions(counts)
    assert not np.isnan(frac).any()
    assert (frac[..., 0] == 0).all()
    land = counts[..., 1:].sum(axis=-1)
    np.testing.assert_allclose(frac.sum(axis=-1)[land > 0], 1.0)
    assert (frac[land == 0] == 0).all()  # an all-background region: zeros, not NaN
    every = fractions(counts, background=True)
    area = counts.sum(axis=-1)  # tiny patches have empty 3 x 3 bands
    np.testing.assert_allclose(every.sum(axis=-1)[area > 0], 1.0)
    assert (every[area == 0] == 0).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=SIZES, kind=KINDS)
def test_flips_swap_regions(seed: int, size: int, kind: str) -> None:
    labels = make_maps(seed, size, kind)
    counts = region_counts(labels)
    for flipped, mirror in ((labels[:, :, ::-1], MIRROR_LR), (labels[:, ::-1, :], MIRROR_UD)):
        got = region_counts(np.ascontiguousarray(flipped))
        for r, name in enumerate(REGIONS):
            np.testing.assert_array_equal(
                got[:, r], counts[:, REGIONS.index(mirror.get(name, name))]
            )


def test_ties_and_empty_regions() -> None:
    # Left half water, right half tree: a tie over the whole patch; the top left quadrant has
    # no tree and the middle an exact 50/50 split.
    labels = np.zeros((1, 256, 256), np.uint8)
    labels[0, :, :128] = 1
    labels[0, :, 128:] = 3
    frac = fractions(region_counts(labels))[0]
    whole, tl, mid = (frac[REGIONS.index(r)] for r in ("whole", "top left", "middle"))
    assert whole[1] == whole[3] == 0.5
    assert tl[1] == 1.0 and tl[3] == 0.0
    assert mid[1] == mid[3] == 0.5
    # Background only in the top right quadrant: that region is empty of land.
    labels[0, :128, 128:] = 0
    frac = fractions(region_counts(labels))[0]
    assert (frac[REGIONS.index("top right")] == 0).all()


def test_kernel_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="class index 12"):
        region_counts(np.full((1, 64, 64), 12, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        region_counts(np.zeros((1, 64, 64), np.int32))
    with pytest.raises(ValueError, match="even"):
        region_counts(np.zeros((1, 7, 7), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        region_counts(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="12 classes"):
        fractions(np.zeros((2, 5)))


# ---------------------------------------------------------------------------------- layout


def _grass(n: int = 1) -> Labels:
    return np.full((n, 256, 256), 5, np.uint8)


def _water(rec: npt.NDArray[np.void]) -> dict[str, object]:
    return patch_layout(rec)["water"]


def test_rivers_lakes_and_edges() -> None:
    maps = _grass(5)
    maps[0, :, 100:110] = 1  # a river running north-south
    maps[1, 120:128, :] = 1  # ... and east-west
    yy, xx = np.mgrid[:256, :256]
    maps[2][(yy - 128) ** 2 + (xx - 128) ** 2 < 60**2] = 1  # a round lake
    maps[3][np.abs((255 - yy) - xx) < 6] = 1  # a diagonal from bottom left to top right
    maps[4, :, :20] = 1  # water along the left edge only
    lay = layout(maps)
    ns, ew, lake, diag, shore = (_water(lay[i]) for i in range(5))
    assert ns["orientation"] == "north-south" and ns["orientation_deg"] == 0.0
    assert ns["components"] == 1 and ns["elongation"] > 8
    assert ns["edges"] == ["top", "bottom"]
    assert ew["orientation"] == "east-west" and ew["orientation_deg"] == 90.0
    assert ew["edges"] == ["left", "right"]
    assert lake["orientation"] == "compact" and lake["elongation"] < 1.1
    assert lake["edges"] == [] and lake["components"] == 1
    assert lake["fragmentation"] < 0.05
    assert abs(diag["orientation_deg"] - 45) < 1
    assert orientation_name(diag["orientation_deg"], diag["elongation"], diagonals=True) == (
        "northeast-southwest"
    )
    assert shore["edges"] == ["top", "bottom", "left"]
    assert edge_names(int(lay[4, 5]["edges"])) == ("top", "bottom", "right")  # grass
    json.dumps([patch_layout(r) for r in lay])  # JSON-able: no NaN, no numpy types


def test_scattered_blobs_versus_one_block() -> None:
    maps = _grass(2)
    for y in range(4, 256, 16):
        for x in range(4, 256, 16):
            maps[0, y : y + 3, x : x + 3] = 2  # 256 small settlements
    maps[1, 64:112, 64:112] = 2  # one compact town
    lay = layout(maps)
    scattered, town = lay[0, 2], lay[1, 2]
    assert scattered["components"] == 256
    assert scattered["largest_share"] == pytest.approx(1 / 256)
    assert scattered["fragmentation"] > 0.5
    assert town["components"] == 1 and town["largest_share"] == 1.0
    assert town["fragmentation"] < 0.1
    assert town["largest_patch_share"] == pytest.approx((48 / 256) ** 2)


def test_layout_ties_empty_and_batch_independence() -> None:
    maps = _grass(3)
    maps[0, 16:48, 16:48] = 1  # two equal lakes: the largest is the first in reading order
    maps[0, 200:232, 200:232] = 1
    maps[1] = 0  # background only
    maps[2, ::2, ::2] = 1  # a speckle
    lay = layout(maps)
    assert lay[0, 1]["components"] == 2 and lay[0, 1]["largest_share"] == 0.5
    assert (lay[1]["components"] == 0).all() and np.isnan(lay[1]["elongation"]).all()
    assert patch_layout(lay[1]) == {}
    assert lay[1, 0]["edges"] == 15  # background touches every edge
    for i in range(3):
        alone = layout(maps[i : i + 1])[0]
        for f in LAYOUT_FIELDS:
            np.testing.assert_array_equal(alone[f], lay[i][f])


# ------------------------------------------------------------------------------ Dask stage


def _store(tmp_path: Path, labels: Labels, status: list[str], shard: int) -> str:
    n, size = labels.shape[0], labels.shape[1]
    url = str(tmp_path / "dataset.zarr")
    spec = StoreSpec(url, n, shard, ("B04",), size, "analysis-test")
    create_or_open(spec, {})
    for i in range(spec.n_shards):
        a, b = spec.shard_range(i)
        fields = {
            "patch_id": np.array([f"p{j:03d}" for j in range(a, b)], dtype=object),
            "status": np.array(status[a:b], dtype=object),
        }
        data = ShardData(
            a,
            np.zeros((b - a, 1, size, size), np.int16),
            labels[a:b],
            np.zeros((b - a, size, size), np.uint8),
            fields,
        )
        write_shard(url, i, data)
    return url


@pytest.mark.slow
def test_analyze_store_on_a_real_cluster(tmp_path: Path, dask_client: Client) -> None:
    labels = np.concatenate([make_maps(3, 128, "blocks", 6), make_maps(4, 128, "noise", 5)])
    labels[2][labels[2] == 1] = 3
    labels[2, :, 60:70] = 1  # a river and no other water, for the layout columns
    status = ["ok"] * 11
    status[5] = "failed"
    url = _store(tmp_path, labels, status, shard=4)
    summary = analyze_store(url, dask_client, tmp_path / "run", batch=5)  # tasks of 8 patches
    assert summary["patches"] == 11 and summary["ok"] == 10 and summary["tasks"] == 2

    table = pd.read_parquet(tmp_path / "run" / "analysis.parquet")
    assert list(table["patch_id"]) == [f"p{i:03d}" for i in range(11)]
    assert table.loc[5, "status"] == "failed"
    ok = np.array(status) == "ok"
    want = np.zeros((11, len(REGIONS), NUM_CLASSES), np.int32)
    want[ok] = region_counts(labels[ok])
    stored = np.asarray(open_group(url)["region_counts"][:])
    np.testing.assert_array_equal(stored, want)
    frac = fractions(want)
    want_layout = layout(labels[ok])
    for r, region in enumerate(REGIONS):
        for k, cls in enumerate(CLASS_NAMES):
            np.testing.assert_array_equal(table[f"count_{slug(region)}_{slug(cls)}"], want[:, r, k])
            if k:
                col = table[f"frac_{slug(region)}_{slug(cls)}"].to_numpy()
                np.testing.assert_allclose(col[ok], frac[ok, r, k], rtol=1e-6)
                assert np.isnan(col[5])
    for field in LAYOUT_FIELDS:
        for k in range(1, NUM_CLASSES):
            col = table[f"{field}_{slug(CLASS_NAMES[k])}"].to_numpy()
            np.testing.assert_array_equal(col[ok], want_layout[field][:, k])
    assert table.loc[2, "orientation_water"] == 0.0  # the river runs north-south
    assert table.loc[5, "components_tree"] == 0 and np.isnan(table.loc[5, "elongation_tree"])

    # Again: the array is reused and the table comes out the same.
    analyze_store(url, dask_client, tmp_path / "run", batch=5)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "analysis.parquet"), table)
