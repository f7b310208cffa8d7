"""Readers retry a failed read on a fresh handle, count it, and name what outlasts the retries."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from cenlib.ingest.read import RETRIES, AssetReadError, AssetRef, Readers


def _cog(path: Path) -> np.ndarray:
    data = (np.arange(512 * 512, dtype=np.uint32) % 9973).astype(np.uint16).reshape(512, 512)
    with rasterio.open(
        path, "w", driver="COG", width=512, height=512, count=1, dtype="uint16",
        crs="EPSG:32632", transform=from_origin(600000, 5200000, 10, 10), blocksize=128,
        compress="deflate",
    ) as ds:  # fmt: skip
        ds.write(data, 1)
    return data


def _truncate(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size * 2 // 3])


def test_a_transient_failure_is_retried_and_counted(tmp_path: Path) -> None:
    good, path = tmp_path / "good.tif", tmp_path / "b04.tif"
    data = _cog(good)
    _truncate(good, path)  # the tail tiles are missing, as after a reset
    ref = AssetRef("S2X_TEST", "red", str(path))
    waits: list[float] = []

    def mend(seconds: float) -> None:  # the store recovers during the first backoff
        waits.append(seconds)
        shutil.copyfile(good, path)

    with Readers() as readers:
        readers.sleep = mend
        readers.dataset(ref)  # the header is intact: it opens
        got = readers.read(ref, Window(384, 384, 128, 128))
    assert (got == data[384:, 384:]).all()
    assert readers.retries == {str(path): 1} and len(waits) == 1 and waits[0] > 0


def test_what_outlasts_the_retries_is_named(tmp_path: Path) -> None:
    good, path = tmp_path / "good.tif", tmp_path / "b04.tif"
    _cog(good)
    _truncate(good, path)
    ref = AssetRef("S2X_TEST", "red", str(path))
    waits: list[float] = []
    with Readers() as readers:
        readers.sleep = waits.append
        with pytest.raises(AssetReadError) as e:
            readers.read(ref, Window(384, 384, 128, 128))
        assert e.value.item_id == "S2X_TEST" and e.value.asset == "red"
        assert e.value.href == str(path) and f"after {RETRIES + 1} attempts" in e.value.reason
        assert "TIFF" in e.value.reason  # GDAL's own words, not "see previous exception"
        assert waits == [w * 2**i for i, w in enumerate([waits[0]] * RETRIES)]
        # Known broken now: the next failing read on it is final at once.
        with pytest.raises(AssetReadError):
            readers.read(ref, Window(256, 384, 128, 128))
    assert readers.retries == {str(path): RETRIES} and len(waits) == RETRIES
    # Readable windows of the same file still read.
    with Readers() as readers:
        assert readers.read(ref, Window(0, 0, 128, 128)).shape == (128, 128)


def test_a_missing_file_is_not_retried(tmp_path: Path) -> None:
    ref = AssetRef("S2X_TEST", "red", str(tmp_path / "nowhere.tif"))
    with Readers() as readers:
        readers.sleep = lambda s: pytest.fail("slept before a retry of a missing file")
        with pytest.raises(AssetReadError, match="cannot open"):
            readers.dataset(ref)
    assert readers.retries == {}
