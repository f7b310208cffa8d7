"""The export stage on a real run (the demo world's Dolomites patches ingested, analysed,
prompted, captioned by the rules captioner and verified on the session's cluster): ChatEarthNet's
layout read back, review decisions honoured, splits disjoint by tile."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from distributed import Client
from PIL import Image

from cenlib.captions import read_captions, run_captions
from cenlib.config import RunConfig, parse_config
from cenlib.export import LAYOUT, ExportError, block_of, read_table, run_export
from cenlib.grid import grid_for
from cenlib.ingest import array, open_group
from cenlib.prompts import run_prompts
from cenlib.review.db import record
from cenlib.verify import read_verdicts, run_verify


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory, dolomites_run: Path, dask_client: Client
) -> Path:
    out = tmp_path_factory.mktemp("export") / "base"
    shutil.copytree(dolomites_run, out)
    cfg = parse_config({"output": str(out)})
    run_prompts(cfg, dask_client)
    run_captions(cfg.caption, out, dask_client)
    run_verify(cfg, dask_client)
    return out


def _cfg(base: Path, tmp_path: Path, **export: object) -> RunConfig:
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return parse_config({"output": str(out), "export": export})


def test_chatearthnet_layout_round_trip(base: Path, tmp_path: Path, dask_client: Client) -> None:
    cfg = _cfg(base, tmp_path)
    summary = run_export(cfg, dask_client)
    root = cfg.output / LAYOUT
    verdicts = {v.patch_id: v for v in read_verdicts(cfg.output)}
    model = next(iter(read_captions(cfg.output))).model
    assert summary.exported == len(verdicts) >= 8  # the rules captions all pass
    seen: dict[str, tuple[str, str]] = {}
    for f in sorted((root / "captions").glob("*.json")):
        name, split = f.stem.rsplit("_", 1)
        assert name == model.replace("@", "-") and split in ("train", "validation", "test")
        for rec in json.loads(f.read_text()):
            pid = Path(rec["image"]).stem
            assert (root / rec["image"]).is_file()
            seen[pid] = (split, rec["caption"])
    assert {p: c for p, (_, c) in seen.items()} == {p: v.caption for p, v in verdicts.items()}
    assert summary.splits == {s: sum(x == s for x, _ in seen.values()) for s in summary.splits}
    # Pixels: the label PNG is the store's map; the RGB PNG is the stretched reflectance.
    g = open_group(str(cfg.output / "dataset.zarr"))
    ids = [str(x) for x in np.asarray(array(g, "patch_id")[:])]
    bands = [str(b) for b in np.asarray(array(g, "band")[:])]
    stretch = json.loads((root / "stretch.json").read_text())
    for pid in sorted(seen)[:3]:
        i = ids.index(pid)
        lab = np.asarray(Image.open(root / "images" / "label" / f"{pid}.png"))
        assert np.array_equal(lab, np.asarray(array(g, "land_cover")[i]))
        rgb = np.asarray(Image.open(root / "images" / "rgb" / f"{pid}.png"))
        red = np.asarray(array(g, "reflectance")[i])[bands.index("red")].astype(float)
        lo, hi = stretch["red"]
        want = np.rint(np.clip((red - lo) * 255 / (hi - lo), 0, 255))
        assert np.abs(rgb[..., 0].astype(float) - want).max() <= 1
    # Spatially disjoint: the four patches of a zoom-13 tile share a split.
    grid = grid_for(cfg.grid)
    split = json.loads((root / "splits.json").read_text())
    tiles: dict[object, set[str]] = {}
    for pid, s in split.items():
        tiles.setdefault(block_of(grid.key(pid)), set()).add(s)
    assert all(len(s) == 1 for s in tiles.values())


def test_png_compression_changes_bytes_not_pixels(
    base: Path, tmp_path: Path, dask_client: Client
) -> None:
    fast = _cfg(base, tmp_path / "fast", formats=["chatearthnet"], png_compression=1)
    small = _cfg(base, tmp_path / "small", formats=["chatearthnet"])  # the default, 6
    run_export(fast, dask_client)
    run_export(small, dask_client)
    a, b = fast.output / LAYOUT / "images", small.output / LAYOUT / "images"
    names = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert names == sorted(p.relative_to(b) for p in b.rglob("*.png")) and names
    for rel in names:
        assert np.array_equal(np.asarray(Image.open(a / rel)), np.asarray(Image.open(b / rel)))
    rgb = [n for n in names if n.parts[0] == "rgb"]
    assert sum((a / n).stat().st_size for n in rgb) > sum((b / n).stat().st_size for n in rgb)


def test_review_decisions_win(base: Path, tmp_path: Path, dask_client: Client) -> None:
    cfg = _cfg(base, tmp_path)
    verdicts = list(read_verdicts(cfg.output))
    a, b, c = verdicts[:3]
    record(cfg.output, a.patch_id, a.key, "reject", "tester")
    record(cfg.output, b.patch_id, b.key, "edit", "tester", text="Edited by hand.")
    record(cfg.output, c.patch_id, "0" * 64, "reject", "tester")  # stale: another caption's key
    summary = run_export(cfg, dask_client)
    captions = {}
    for f in (cfg.output / LAYOUT / "captions").glob("*.json"):
        captions |= {Path(r["image"]).stem: r["caption"] for r in json.loads(f.read_text())}
    assert a.patch_id not in captions and summary.excluded == {"rejected in review": 1}
    assert captions[b.patch_id] == "Edited by hand."
    assert captions[c.patch_id] == c.caption
    assert summary.exported == len(verdicts) - 1


def test_a_store_without_rgb_is_named(base: Path, tmp_path: Path, dask_client: Client) -> None:
    cfg = _cfg(base, tmp_path)
    g = open_group(str(cfg.output / "dataset.zarr"), mode="r+")
    names = np.asarray(g["band"][:]).astype(object)
    names[names == "red"] = "rededge1"
    g["band"][:] = names
    with pytest.raises(ExportError, match="not red, green and blue"):
        run_export(cfg, dask_client)


def test_nothing_to_export_is_named(base: Path, tmp_path: Path, dask_client: Client) -> None:
    """Every caption rejected in review: a clear error with the counts, no empty dataset."""
    cfg = _cfg(base, tmp_path)
    verdicts = list(read_verdicts(cfg.output))
    for v in verdicts:
        record(cfg.output, v.patch_id, v.key, "reject", "tester")
    with pytest.raises(ExportError) as e:
        run_export(cfg, dask_client)
    said = str(e.value)
    assert f"no caption to export from {cfg.output} ({len(verdicts)} rejected in review)" in said
    assert "export.include" in said and not (cfg.output / LAYOUT / "croissant.json").exists()


def test_parquet_and_llava_read_back(base: Path, tmp_path: Path, dask_client: Client) -> None:
    import datasets  # type: ignore[import-untyped]
    import pandas as pd

    cfg = _cfg(base, tmp_path, parquet_images=True, batch=3, formats=["llava", "parquet"])
    record(cfg.output, *_first_key(cfg.output), "accept", "tester")
    run_export(cfg, dask_client)
    root = cfg.output / LAYOUT
    verdicts = {v.patch_id: v for v in read_verdicts(cfg.output)}
    df = read_table(cfg.output, images=True)
    assert list(df["patch_id"]) == sorted(verdicts)
    assert df.equals(pd.read_parquet(root / "parquet").sort_values("patch_id", ignore_index=True))
    g = open_group(str(cfg.output / "dataset.zarr"))
    ids = [str(x) for x in np.asarray(array(g, "patch_id")[:])]
    for row in df.itertuples():
        v = verdicts[row.patch_id]
        assert row.caption == v.caption and row.request_key == v.key
        assert row.verification == v.status and row.style == v.style
        assert len(row.sentinel2_items) and len(row.worldcover_items)
        assert json.loads(row.footprint)["type"] == "Polygon"
        assert row.image_png == (root / row.image).read_bytes()
        lab = np.asarray(Image.open(io.BytesIO(row.label_png)))
        assert np.array_equal(lab, np.asarray(array(g, "land_cover")[ids.index(row.patch_id)]))
        assert sum(json.loads(row.class_fractions).values()) == pytest.approx(1, abs=1e-4)
    assert (df["review"] != "").sum() == 1
    split = json.loads((root / "splits.json").read_text())
    assert dict(zip(df["patch_id"], df["split"], strict=True)) == split
    # The card's front matter names each split's parts: `datasets` loads the export directory.
    hf = datasets.load_dataset(str(root))
    assert sorted(hf) == sorted(set(split.values()))
    for name, part in hf.items():
        assert sorted(part["patch_id"]) == sorted(p for p, s in split.items() if s == name)
        assert {r["patch_id"]: r["caption"] for r in part} == {
            p: verdicts[p].caption for p in part["patch_id"]
        }
    convs = []
    for name in ("train", "validation", "test"):
        for c in json.loads((root / f"llava_{name}.json").read_text()):
            assert split[c["id"]] == name
            human, gpt = c["conversations"]
            assert human["from"] == "human" and human["value"].startswith("<image>\n")
            assert gpt == {"from": "gpt", "value": verdicts[c["id"]].caption}
            convs.append(c["id"])
    assert sorted(convs) == sorted(verdicts)
    assert not (root / "captions").exists() or not any((root / "captions").iterdir())


def _first_key(run: Path) -> tuple[str, str]:
    v = next(iter(read_verdicts(run)))
    return v.patch_id, v.key


def test_every_format_reads_back(base: Path, tmp_path: Path, dask_client: Client) -> None:
    """WebDataset (webdataset), GeoTIFF (rioxarray), STAC (pystac, validated), Croissant
    (mlcroissant): every caption of the run, and pixels against the store."""
    import mlcroissant as mlc
    import pystac
    import rioxarray

    from cenlib.export.shards import read_shards
    from cenlib.export.stac import validate_stac

    cfg = _cfg(base, tmp_path, batch=5)
    s = run_export(cfg, dask_client)
    root = cfg.output / LAYOUT
    want = {v.patch_id: v.caption for v in read_verdicts(cfg.output)}
    split = json.loads((root / "splits.json").read_text())
    g = open_group(str(cfg.output / "dataset.zarr"))
    ids = [str(x) for x in np.asarray(array(g, "patch_id")[:])]
    shards = sorted(str(p) for p in (root / "webdataset").glob("*.tar"))
    assert len(shards) == sum(-(-n // 5) for n in s.splits.values())
    got = {}
    for sample in read_shards(shards):
        pid = sample["patch_id"]
        got[pid] = sample["caption"]
        assert sample["record"]["split"] == split[pid]
        assert sample["rgb"] == (root / "images" / "rgb" / f"{pid}.png").read_bytes()
    assert got == want
    for pid in sorted(want)[:3]:
        i = ids.index(pid)
        tif = rioxarray.open_rasterio(root / "geotiff" / f"{pid}.tif", mask_and_scale=False)
        assert np.array_equal(tif.values, np.asarray(array(g, "reflectance")[i]))
        lab = rioxarray.open_rasterio(root / "geotiff" / f"{pid}_label.tif")
        assert np.array_equal(lab.values[0], np.asarray(array(g, "land_cover")[i]))
        assert tif.rio.crs == lab.rio.crs and tif.rio.crs.to_string() == "EPSG:3857"
    coll = pystac.Collection.from_file(str(root / "stac" / "collection.json"))
    validate_stac(coll.to_dict(include_self_link=False))
    items = list(coll.get_items())
    assert {i.id: i.properties["caption"] for i in items} == want
    for item in items[:3]:
        validate_stac(item.to_dict(include_self_link=False))
        assert Path(item.assets["label"].get_absolute_href() or "").is_file()
        # A world run's sources live only while it is served: no links to dead loopback URLs.
        assert not [link for link in item.links if link.rel in ("derived_from", "source")]
        assert item.properties["sentinel2_items"] and item.properties["worldcover_items"]
    ds = mlc.Dataset(jsonld=str(root / "croissant.json"))
    rows = {}
    for r in ds.records("patches"):
        pid = r["patches/patch_id"]
        pid = pid.decode() if isinstance(pid, bytes) else pid
        cap = r["patches/caption"]
        rows[pid] = cap.decode() if isinstance(cap, bytes) else cap
    assert rows == want
