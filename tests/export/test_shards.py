"""WebDataset shards written by :func:`shard_bytes` and read back with the webdataset package:
every sample, caption, record and pixel; byte-identical rewrites; patch ids with dots."""

from __future__ import annotations

import gc
import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cenlib.export.record import IMAGE, Record
from cenlib.export.shards import SHARD, key_of, patch_of, read_shards, shard_bytes

Sample = tuple[Record, bytes, bytes]


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im)


def _sample(pid: str, split: str, n: int) -> Sample:
    rng = np.random.default_rng(n)
    rec = Record(
        patch_id=pid,
        split=split,
        caption=f"Patch {n} ({pid}): dense tree cover, a lake in the north-east; é, 雪.",
        model="gpt-4o-mini",
        endpoint="local",
        style="chatearthnet-4v@1",
        request_key=f"{n:064x}",
        verification="pass",
        repair_round=n % 2,
        review="",
        datetime="2021-07-14T10:20:31Z",
        sentinel2_items=["S2B_32TPS_20210714_0_L2A"],
        worldcover_items=["ESA_WorldCover_10m_2021_v200_N45E009"],
        grid="chatearthnet",
        crs="EPSG:3857",
        transform=[9.55, 0.0, 1.3e6 + n, 0.0, -9.55, 5.8e6],
        shape=[8, 8],
        bbox=[11.8, 46.5, 11.9, 46.6],
        footprint={"type": "Polygon", "coordinates": [[[11.8, 46.5], [11.9, 46.5], [11.8, 46.5]]]},
        bands=["B02", "B03", "B04", "B08"],
        class_fractions={"tree": 0.75, "water": 0.25},
        images={g: IMAGE.format(group=g, patch=pid) for g in ("rgb", "label")},
    )
    rgb = _png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    label = _png(rng.integers(0, 12, (8, 8), dtype=np.uint8))
    return rec, rgb, label


TRAIN = [_sample(f"{4000 + i}_{2900 + i}_patch{i % 2}{i // 2 % 2}", "train", i) for i in range(5)]
TEST = [_sample(pid, "test", 10 + i) for i, pid in enumerate(["a.b", "a%2Eb", "s2/x.y.z"])]


def _write(root: Path) -> list[str]:
    urls = []
    for part, (split, samples) in enumerate([("train", TRAIN[:3]), ("train", TRAIN[3:])]):
        urls.append(_put(root, SHARD.format(split=split, part=part), samples))
    urls.append(_put(root, SHARD.format(split="test", part=0), TEST))
    return urls


def _put(root: Path, rel: str, samples: list[Sample]) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(shard_bytes(samples))
    return str(path)


def test_read_back_every_sample(tmp_path: Path) -> None:
    urls = _write(tmp_path)
    assert [Path(u).name for u in urls] == [
        "train-000000.tar",
        "train-000001.tar",
        "test-000000.tar",
    ]
    got = list(read_shards(urls))
    want = TRAIN + TEST
    assert len(got) == len(want)
    for g, (rec, rgb, label) in zip(got, want, strict=True):
        assert g["patch_id"] == rec.patch_id
        assert g["caption"] == rec.caption
        assert Record(**g["record"]) == rec
        assert g["rgb"] == rgb and g["label"] == label
        np.testing.assert_array_equal(_pixels(g["rgb"]), _pixels(rgb))
        np.testing.assert_array_equal(_pixels(g["label"]), _pixels(label))


def test_plain_webdataset_reads_the_shards(tmp_path: Path) -> None:
    """What a trainer writes: WebDataset, decoded to arrays, as tuples."""
    urls = _write(tmp_path)
    with warnings.catch_warnings():
        # webdataset 1.0 never closes the shards it opens (read_shards does)
        warnings.simplefilter("ignore", ResourceWarning)
        ds = wds.WebDataset(urls, shardshuffle=False).decode("rgb8")
        got = list(ds.to_tuple("__key__", "png", "label.png", "txt", "json"))
        del ds
        gc.collect()
    assert [patch_of(k) for k, *_ in got] == [r.patch_id for r, _, _ in TRAIN + TEST]
    for (_, rgb, label, txt, meta), (rec, rgb0, label0) in zip(got, TRAIN + TEST, strict=True):
        assert txt == rec.caption and meta["patch_id"] == rec.patch_id
        np.testing.assert_array_equal(rgb, _pixels(rgb0))
        # rgb8 decodes every PNG to RGB; the label's class index is in each channel
        np.testing.assert_array_equal(label[..., 0], _pixels(label0))


def test_shards_are_deterministic() -> None:
    first = shard_bytes(TRAIN)
    assert shard_bytes(TRAIN) == first
    assert shard_bytes(TRAIN[:2]) != first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
    assert {m.mtime for m in members} == {0}
    key = key_of(TRAIN[0][0].patch_id)
    assert [m.name for m in members[:4]] == [
        f"{key}.{e}" for e in ("json", "label.png", "png", "txt")
    ]


def test_patch_ids_with_dots_and_slashes(tmp_path: Path) -> None:
    keys = [key_of(r.patch_id) for r, _, _ in TEST]
    assert len(set(keys)) == len(keys)
    assert not any("." in k or "/" in k for k in keys)
    url = _put(tmp_path, "webdataset/test-000000.tar", TEST)
    assert [s["patch_id"] for s in read_shards([url])] == ["a.b", "a%2Eb", "s2/x.y.z"]


def test_a_patch_twice_in_a_shard_is_refused() -> None:
    with pytest.raises(ValueError, match="twice in one shard"):
        shard_bytes([TRAIN[0], TRAIN[1], TRAIN[0]])


@given(st.text())
def test_keys_are_reversible_and_dot_free(pid: str) -> None:
    key = key_of(pid)
    assert patch_of(key) == pid
    assert "." not in key and "/" not in key
