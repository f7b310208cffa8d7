"""The loopback STAC API: serves worlds and real records, with absolute file:// hrefs,
and always stops."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
import rasterio

from cenlib.stac.server import StacServerError, absolutize, serve


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_world_catalogues_list_their_collections(world_apis: dict[str, str]) -> None:
    es = {c["id"] for c in _get(world_apis["earth-search"] + "/collections")["collections"]}
    pc = {c["id"] for c in _get(world_apis["planetary-computer"] + "/collections")["collections"]}
    assert es == {"sentinel-2-l2a"}
    assert pc == {"sentinel-2-l2a", "esa-worldcover"}


def test_served_hrefs_are_absolute_and_readable(world_apis: dict[str, str]) -> None:
    feats = _get(world_apis["earth-search"] + "/search?limit=3")["features"]
    assert feats
    for f in feats:
        href = f["assets"]["red"]["href"]
        assert href.startswith("file:///")
        with rasterio.open(urlparse(href).path) as ds:
            assert ds.crs.to_epsg() == f["properties"]["proj:epsg"]


def test_real_fixtures_served_with_absolute_hrefs(real_api: str, real_fixtures: Path) -> None:
    ids = {c["id"] for c in _get(real_api + "/collections")["collections"]}
    assert {"sentinel-2-l2a", "esa-worldcover"} <= ids
    wc = _get(real_api + "/collections/esa-worldcover/items")["features"]
    assert [f["id"] for f in wc] == ["ESA_WorldCover_10m_2021_v200_N00E006"]
    href = wc[0]["assets"]["map"]["href"]
    assert (
        href
        == (
            real_fixtures
            / "esa-worldcover/ESA_WorldCover_10m_2021_v200_N00E006"
            / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
        )
        .resolve()
        .as_uri()
    )


def test_absolutize_keeps_remote_hrefs() -> None:
    item = {
        "assets": {"a": {"href": "B02.tif"}, "b": {"href": "https://x/y.tif"}},
        "links": [{"rel": "collection", "href": "../c.json"}],
    }
    out = absolutize(item, Path("/data/items/i.json"))
    assert out["assets"]["a"]["href"] == "file:///data/items/B02.tif"
    assert out["assets"]["b"]["href"] == "https://x/y.tif"
    assert out["links"] == []
    assert item["assets"]["a"]["href"] == "B02.tif", "input left untouched"


def test_server_stops_after_block(real_fixtures: Path) -> None:
    with serve([real_fixtures / "esa-worldcover"]) as url:
        port = urlparse(url).port
        assert _get(url + "/")["type"] == "Catalog"
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", port))


def test_server_stops_on_error_inside_block(real_fixtures: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        serve([real_fixtures / "esa-worldcover"]) as url,
    ):
        port = urlparse(url).port
        raise RuntimeError("boom")
    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("127.0.0.1", port))


def test_bad_inputs_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StacServerError, match="no such file"), serve([tmp_path / "missing"]):
        pass
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(StacServerError, match=r"broken\.json: not valid JSON"), serve([tmp_path]):
        pass
    (tmp_path / "broken.json").unlink()
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(StacServerError, match="no STAC collections or items"), serve([tmp_path]):
        pass
