"""Croissant metadata over three Parquet parts, validated and loaded offline with mlcroissant:
every record's caption, numbers, geometry and pixels; the splits; broken on purpose to show
mlcroissant rejects what it should."""

from __future__ import annotations

import copy
import io
import json
import socket
from pathlib import Path
from typing import Any

import mlcroissant as mlc
import numpy as np
import pytest
from PIL import Image

from cenlib.export.croissant import CC_BY_4, croissant
from cenlib.export.parquet import PARQUET, SCHEMA, parquet_part
from cenlib.export.record import IMAGE, Record
from cenlib.export.splits import SPLITS

# mlcroissant 1.1.1's own deprecated calls (rdflib, pandas); nothing for us to change.
pytestmark = [
    pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),
]
FOOTPRINT = {"type": "Polygon", "coordinates": [[[11.8, 46.5], [11.9, 46.5], [11.8, 46.5]]]}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlcroissant must read a local export without the network."""

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError(f"network access attempted: {a[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _record(n: int, split: str) -> Record:
    pid = f"{4300 + n}_{2900 + n}_patch{n % 2}{n // 2 % 2}"
    return Record(
        patch_id=pid,
        split=split,
        caption=f"Patch {n}: {70 - n}% tree cover, a lake to the north-east; snow on the peaks.",
        model="gpt-4o-mini",
        endpoint="local",
        style="chatearthnet-4v@1",
        request_key=f"{n:064x}",
        verification="repaired" if n == 1 else "pass",
        repair_round=n,
        review="accept" if n == 0 else "",
        datetime=f"2021-07-{10 + n:02d}T10:20:31Z",
        sentinel2_items=[f"S2B_32TPS_202107{10 + n:02d}_0_L2A"],
        worldcover_items=["ESA_WorldCover_10m_2021_v200_N45E009"],
        grid="chatearthnet",
        crs="EPSG:3857",
        transform=[9.55, 0.0, 1.3e6 + 2445.98 * n, 0.0, -9.55, 5.8e6],
        shape=[8, 8],
        bbox=[11.8 + 0.02 * n, 46.5, 11.82 + 0.02 * n, 46.52],
        footprint=FOOTPRINT,
        bands=["B02", "B03", "B04", "B08"],
        class_fractions={"tree": 0.7 - n / 100, "water": 0.3 + n / 100},
        images={g: IMAGE.format(group=g, patch=pid) for g in ("rgb", "label")},
    )


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


RECORDS = [_record(n, s) for n, s in enumerate(["train"] * 3 + ["validation", "test"])]
PARTS = {("train", 0): RECORDS[:2], ("train", 1): RECORDS[2:3], ("test", 0): RECORDS[4:]}
PARTS[("validation", 0)] = RECORDS[3:4]
PIXELS = {
    r.patch_id: (np.full((8, 8, 3), (n, 2 * n, 3 * n), np.uint8), np.full((8, 8), n, np.uint8))
    for n, r in enumerate(RECORDS)
}


def _export(root: Path, images: bool, glob: bool = False) -> Path:
    """An export root with the Parquet parts and croissant.json (naming the parts, or with the
    default glob); returns croissant.json."""
    pngs = {pid: (_png(a), _png(b)) for pid, (a, b) in PIXELS.items()} if images else None
    (root / "parquet").mkdir(parents=True)
    (root / "images").mkdir()  # other files of the export are walked past, not read
    (root / "images" / "stray.parquet").write_bytes(b"not a part")
    for (split, part), recs in PARTS.items():
        (root / PARQUET.format(split=split, part=part)).write_bytes(parquet_part(recs, pngs))
    meta = croissant(
        name="chatearthnet-test",
        description="Sentinel-2 patches with land-cover captions.",
        url="https://example.org/chatearthnet-test",
        version="1.0.0",
        license=CC_BY_4,
        citation="Yuan, Z., et al.: ChatEarthNet, ESSD, 2025.",
        date_published="2025-01-01",
        **({} if glob else {"parquet_files": [PARQUET.format(split=s, part=p) for s, p in PARTS]}),
        images=images,
        splits=SPLITS,
    )
    path = root / "croissant.json"
    path.write_text(json.dumps(meta, indent=2))
    return path


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _load(path: Path) -> dict[str, dict[str, Any]]:
    ds = mlc.Dataset(jsonld=str(path))  # validates; raises mlc.ValidationError
    rows = [{k.removeprefix("patches/"): v for k, v in r.items()} for r in ds.records("patches")]
    return {_text(r["patch_id"]): r for r in rows}


@pytest.mark.parametrize(("images", "glob"), [(True, False), (False, True)])
def test_mlcroissant_loads_every_record(tmp_path: Path, images: bool, glob: bool) -> None:
    rows = _load(_export(tmp_path, images, glob))
    assert sorted(rows) == sorted(r.patch_id for r in RECORDS)
    for rec in RECORDS:
        row = rows[rec.patch_id]
        assert _text(row["caption"]) == rec.caption
        assert _text(row["split"]) == rec.split
        assert row["repair_round"] == rec.repair_round
        assert row["bbox"] == pytest.approx(rec.bbox)
        assert row["transform"] == pytest.approx(rec.transform)
        assert row["shape"] == rec.shape
        assert [_text(b) for b in row["bands"]] == rec.bands
        assert row["datetime"].isoformat() == rec.datetime.replace("Z", "+00:00")
        assert json.loads(row["class_fractions"]) == rec.class_fractions
        assert json.loads(row["footprint"]) == rec.footprint
        assert _text(row["image"]) == rec.images["rgb"]
        assert ("image_png" in row) is images
        if images:
            rgb, label = PIXELS[rec.patch_id]
            np.testing.assert_array_equal(np.asarray(row["image_png"]), rgb)
            np.testing.assert_array_equal(np.asarray(row["label_png"]), label)


def test_splits_and_metadata(tmp_path: Path) -> None:
    path = _export(tmp_path, images=True)
    meta = json.loads(path.read_text())
    assert meta["license"] == CC_BY_4
    assert "Copernicus Sentinel" in meta["description"] and "WorldCover" in meta["description"]
    assert meta["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    fields = [f["name"] for f in meta["recordSet"][1]["field"]]
    assert fields == [*SCHEMA.names, "image_png", "label_png"]
    splits = list(mlc.Dataset(jsonld=str(path)).records("splits"))
    assert [_text(s["splits/name"]) for s in splits] == list(SPLITS)
    assert [_text(s["splits/url"]) for s in splits] == [
        "cr:TrainingSplit",
        "cr:ValidationSplit",
        "cr:TestSplit",
    ]


def _broken(path: Path, change: Any) -> Path:
    meta = copy.deepcopy(json.loads(path.read_text()))
    change({f["name"]: f for f in meta["recordSet"][1]["field"]}, meta)
    out = path.with_name("broken.json")
    out.write_text(json.dumps(meta))
    return out


def test_broken_metadata_is_rejected(tmp_path: Path) -> None:
    path = _export(tmp_path, images=False)

    def no_such_split_field(f: dict[str, Any], m: dict[str, Any]) -> None:
        f["split"]["references"]["field"]["@id"] = "splits/nope"

    def no_such_fileset(f: dict[str, Any], m: dict[str, Any]) -> None:
        f["caption"]["source"]["fileSet"]["@id"] = "nope"

    def no_such_type(f: dict[str, Any], m: dict[str, Any]) -> None:
        f["repair_round"]["dataType"] = "sc:Nope"

    for change, what in [
        (no_such_split_field, 'reference to node with UUID "splits/nope"'),
        (no_such_fileset, 'reference to node with UUID "nope"'),
        (no_such_type, "does not specify a valid"),
    ]:
        with pytest.raises(mlc.ValidationError, match=what):
            mlc.Dataset(jsonld=str(_broken(path, change)))


def test_a_missing_column_or_part_fails_the_load(tmp_path: Path) -> None:
    path = _export(tmp_path, images=False)

    def no_such_column(f: dict[str, Any], m: dict[str, Any]) -> None:
        f["caption"]["source"]["extract"]["column"] = "nope"

    def no_parts(f: dict[str, Any], m: dict[str, Any]) -> None:
        m["distribution"][0]["includes"] = ["nothing/*.parquet"]

    for change in (no_such_column, no_parts):
        ds = mlc.Dataset(jsonld=str(_broken(path, change)))
        with pytest.raises(mlc.GenerationError):
            list(ds.records("patches"))


def test_no_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="no Parquet parts"):
        croissant(
            name="x",
            description="x",
            url="https://example.org",
            version="1",
            citation="x",
            date_published="2025-01-01",
            parquet_files=[],
            images=False,
            splits=SPLITS,
        )
