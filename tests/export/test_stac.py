"""The static STAC collection of three Dolomites patches, written to disk and read back with
pystac and rustac, validated offline (core 1.1.0 and the label, classification and projection
extension schemas), and broken on purpose to show the validation rejects what it should."""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import subprocess
import sys
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import pystac
import pytest
import rustac
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension

from cenlib.export.record import IMAGE, STAC_ITEM, Record
from cenlib.export.stac import EXT, StacError, stac_collection, stac_item, validate_stac
from cenlib.grid import Grid

with warnings.catch_warnings():  # pystac calls its label extension unmaintained; we read it
    warnings.simplefilter("ignore", DeprecationWarning)
    from pystac.extensions.label import LabelExtension, LabelType

ES = ("https://earth-search.aws.element84.com/v1", "sentinel-2-l2a")
PC = ("https://planetarycomputer.microsoft.com/api/stac/v1", "esa-worldcover")
SOURCES = {"sentinel2": ES, "worldcover": PC}
FRACTIONS = {"tree": 0.42, "grass": 0.23, "bare land": 0.2, "snow": 0.1, "water": 0.05}


def _record(lon: float, lat: float, split: str, n: int) -> Record:
    key = Grid().at(lon, lat)
    poly = key.lonlat_polygon()
    return Record(
        patch_id=key.id,
        split=split,
        caption=f"Patch {n}: mostly tree cover, with grass and bare rock; snow on the peaks.",
        model="gpt-4o-mini",
        endpoint="local",
        style="chatearthnet-4v@1",
        request_key=f"{n:064x}",
        verification="repaired" if n == 1 else "pass",
        repair_round=1 if n == 1 else 0,
        review="accept" if n == 0 else "",
        datetime="2021-07-14T10:20:31Z",
        sentinel2_items=["S2B_32TPS_20210714_0_L2A"],
        worldcover_items=["ESA_WorldCover_10m_2021_v200_N45E009"],
        grid="chatearthnet",
        crs="EPSG:3857",
        transform=list(key.geobox.affine)[:6],
        shape=[256, 256],
        bbox=list(poly.boundingbox),
        footprint=json.loads(json.dumps(poly.json)),
        bands=["B02", "B03", "B04", "B08"],
        class_fractions=FRACTIONS,
        images={g: IMAGE.format(group=g, patch=key.id) for g in ("rgb", "rededge", "label")},
    )


RECORDS = [
    _record(11.85, 46.55, "train", 0),  # Sella group
    _record(12.17, 46.62, "validation", 1),  # Tre Cime
    _record(11.64, 46.43, "test", 2),  # Latemar
]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No schema, or anything else, may come over the network in these tests."""

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError(f"network access attempted: {a[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for rec in RECORDS:
        path = tmp_path / STAC_ITEM.format(patch=rec.patch_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stac_item(rec, SOURCES), indent=1))
        for rel in rec.images.values():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_bytes(b"\x89PNG")
    coll = stac_collection(
        title="ChatEarthNet-style dataset: Dolomites",
        description="Sentinel-2 patches of the Dolomites captioned from ESA WorldCover.",
        bbox=[11.6, 46.4, 12.2, 46.7],
        interval=("2021-07-14T10:20:31Z", "2021-07-14T10:20:31Z"),
        item_hrefs=[f"./items/{r.patch_id}.json" for r in RECORDS],
        splits={"train": 1, "validation": 1, "test": 1},
    )
    (tmp_path / "stac" / "collection.json").write_text(json.dumps(coll, indent=1))
    return tmp_path


def test_pystac_reads_the_collection(root: Path) -> None:
    coll = pystac.Collection.from_file(str(root / "stac" / "collection.json"))
    items = {i.id: i for i in coll.get_items()}
    assert set(items) == {r.patch_id for r in RECORDS}
    for rec in RECORDS:
        item = items[rec.patch_id]
        assert item.properties["caption"] == rec.caption
        assert item.properties["split"] == rec.split
        assert (
            item.datetime is not None and item.datetime.isoformat() == "2021-07-14T10:20:31+00:00"
        )
        assert item.collection_id == "chatearthnet"
        for key in ("rgb", "rededge", "label"):
            href = Path(item.assets[key].get_absolute_href() or "")
            assert href == root / rec.images[key] and href.is_file()
        tif = item.assets["reflectance"]
        assert tif.get_absolute_href() == str(root / "geotiff" / f"{rec.patch_id}.tif")
        assert tif.media_type == pystac.MediaType.COG
        assert item.assets["land_cover"].href.endswith(f"{rec.patch_id}_label.tif")
        assert item.assets["rgb"].roles == ["visual", "overview"]
        proj = ProjectionExtension.ext(item)
        assert proj.code == "EPSG:3857" and proj.shape == [256, 256]
        assert proj.transform == rec.transform
        label = LabelExtension.ext(item)
        assert label.label_type == LabelType.RASTER and label.label_tasks == ["segmentation"]
        counts = {c.name: c.count for c in (label.label_overviews or [])[0].counts or []}
        assert counts["tree"] == round(0.42 * 256 * 256) and counts["background"] == 0
        classes = ClassificationExtension.ext(item.assets["land_cover"]).classes or []
        assert [c.value for c in classes] == list(range(12))
        assert classes[2].title == "developed area" and classes[2].color_hint == "FA0000"
        derived = [link.href for link in item.links if link.rel == "derived_from"]
        assert derived == [
            f"{ES[0]}/collections/{ES[1]}/items/{rec.sentinel2_items[0]}",
            f"{PC[0]}/collections/{PC[1]}/items/{rec.worldcover_items[0]}",
        ]
    assert coll.summaries.get_list("split") == ["train", "validation", "test"]
    titles = [link.title or "" for link in coll.links if link.rel == "license"]
    assert any("Copernicus Sentinel" in t for t in titles)
    assert any("WorldCover" in t and "CC BY 4.0" in t for t in titles)


def test_rustac_reads_the_collection(root: Path) -> None:
    coll = rustac.read_sync(str(root / "stac" / "collection.json"))
    assert coll["id"] == "chatearthnet"

    async def walk() -> list[dict[str, Any]]:
        return [i async for _, _, items in rustac.walk(coll) for i in items]

    items = {i["id"]: i for i in asyncio.run(walk())}
    assert {k: v["properties"]["caption"] for k, v in items.items()} == {
        r.patch_id: r.caption for r in RECORDS
    }


def test_everything_validates_offline(root: Path) -> None:
    for path in sorted((root / "stac").rglob("*.json")):
        checked = validate_stac(json.loads(path.read_text()))
        if path.name != "collection.json":
            assert set(EXT.values()) <= set(checked), path


def test_rustac_validates_the_core(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # rustac bundles the core schemas but fetches extension schemas by URL, so it checks a
    # copy that declares no extensions; the extension schemas are checked by validate_stac.
    cli = shutil.which("rustac", path=str(Path(sys.executable).parent))
    assert cli, "rustac's command line is installed with the rustac package"
    out = tmp_path_factory.mktemp("core")
    for path in sorted((root / "stac").rglob("*.json")):
        doc = json.loads(path.read_text()) | {"stac_extensions": []}
        (out / path.name).write_text(json.dumps(doc))
    good = sorted(out.glob("*.json"))
    broken = copy.deepcopy(json.loads(good[0].read_text()))
    del broken["properties"]["datetime"]
    (out / "broken.json").write_text(json.dumps(broken))
    for path in good:
        r = subprocess.run([cli, "validate", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, (path.name, r.stdout, r.stderr)
    bad = subprocess.run([cli, "validate", str(out / "broken.json")], capture_output=True)
    assert bad.returncode != 0


def _item() -> dict[str, Any]:
    return stac_item(RECORDS[0], SOURCES)


def test_validation_rejects_broken_items() -> None:
    validate_stac(_item())
    no_time = _item()
    del no_time["properties"]["datetime"]
    with pytest.raises(StacError, match=r"not valid STAC.*v1.1.0/item-spec"):
        validate_stac(no_time)  # core schema
    vector = _item()
    vector["properties"]["label:type"] = "polygon"
    with pytest.raises(StacError, match=r"valid STAC.*/label/v1.0.1/"):
        validate_stac(vector)  # label extension
    spaced = _item()
    spaced["assets"]["land_cover"]["classification:classes"][2]["name"] = "developed area"
    with pytest.raises(StacError, match=r"valid STAC.*/classification/v2.0.0/.*does not match"):
        validate_stac(spaced)  # classification extension: names without spaces
    shape = _item()
    shape["properties"]["proj:shape"] = [256]
    with pytest.raises(StacError, match=r"valid STAC.*/projection/v2.0.0/.*too short"):
        validate_stac(shape)  # projection extension
    unknown = _item()
    unknown["stac_extensions"].append("https://stac-extensions.github.io/eo/v2.0.0/schema.json")
    with pytest.raises(StacError, match="no local schema"):
        validate_stac(unknown)


def test_sources_without_an_api_url_leave_no_links() -> None:
    item = stac_item(RECORDS[1], {"sentinel2": ("world", "sentinel-2-l2a")}, geotiff=False)
    assert not [link for link in item["links"] if link["rel"] in ("derived_from", "source")]
    assert item["properties"]["sentinel2_items"] == RECORDS[1].sentinel2_items
    assert "reflectance" not in item["assets"] and "land_cover" not in item["assets"]
    validate_stac(item)


def test_unknown_class_names_are_an_error() -> None:
    rec = RECORDS[0]
    bad = Record(**{**rec.as_json(), "class_fractions": {"forest": 1.0}})
    with pytest.raises(StacError, match=rec.patch_id):
        stac_item(bad, SOURCES)
