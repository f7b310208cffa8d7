"""pystac-client against the served world and the served real records: collections, bbox,
datetime, paging beyond one page, and the client-side cloud filter."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from typing import ClassVar

import numpy as np
import odc.stac
import pytest
from pystac_client import Client

from cenlib.stac import dialects
from cenlib.stac.search import SearchRequest, StacSearchError, search
from cenlib.world.presets import preset_areas

DOLOMITES = next(a for a in preset_areas("demo") if a.name == "dolomites")


def test_pystac_client_lists_collections(world_apis: dict[str, str], real_api: str) -> None:
    es = Client.open(world_apis["earth-search"])
    pc = Client.open(world_apis["planetary-computer"])
    assert [c.id for c in es.get_collections()] == ["sentinel-2-l2a"]
    assert sorted(c.id for c in pc.get_collections()) == ["esa-worldcover", "sentinel-2-l2a"]
    wc = pc.get_collection("esa-worldcover")
    assert wc.extent.spatial.bboxes[0][0] < -44 < 25 < wc.extent.spatial.bboxes[0][2]
    real = Client.open(real_api)
    assert {"esa-worldcover", "sentinel-2-l2a"} <= {c.id for c in real.get_collections()}


def test_api_declares_no_query_or_filter(world_apis: dict[str, str]) -> None:
    client = Client.open(world_apis["earth-search"])
    assert not client.conforms_to("QUERY") and not client.conforms_to("FILTER")


def test_bbox_selects_only_intersecting_scenes(world_apis: dict[str, str]) -> None:
    res = search(SearchRequest(world_apis["earth-search"], "sentinel-2-l2a", DOLOMITES.bbox))
    tiles = {i.properties["grid:code"] for i in res.items}
    assert tiles == {"MGRS-32TQS", "MGRS-33TTM"}  # both zones cover the straddling area
    assert len(res.items) == 6
    far = search(
        SearchRequest(world_apis["earth-search"], "sentinel-2-l2a", (100.0, 10.0, 100.1, 10.1))
    )
    assert far.items == []


def test_datetime_interval(world_apis: dict[str, str]) -> None:
    res = search(
        SearchRequest(
            world_apis["earth-search"], "sentinel-2-l2a", DOLOMITES.bbox, "2021-07-01/2021-07-05"
        )
    )
    assert {i.datetime.date().isoformat() for i in res.items} == {"2021-07-03"}  # type: ignore[union-attr]
    assert len(res.items) == 2


def test_paging_beyond_one_page(world_apis: dict[str, str]) -> None:
    url = world_apis["earth-search"]
    everything = search(SearchRequest(url, "sentinel-2-l2a", (-180, -90, 180, 90), page_size=100))
    paged = search(SearchRequest(url, "sentinel-2-l2a", (-180, -90, 180, 90), page_size=2))
    assert len(everything.items) == 12
    assert [i.id for i in paged.items] == [i.id for i in everything.items]
    # And the server really paged: its first page holds two items and links to the next.
    first = Client.open(url).search(collections=["sentinel-2-l2a"], limit=2)
    page = next(iter(first.pages()))
    assert len(page.items) == 2


def test_client_side_cloud_filter(world_apis: dict[str, str]) -> None:
    url = world_apis["earth-search"]
    all_items = search(SearchRequest(url, "sentinel-2-l2a", (-180, -90, 180, 90))).items
    res = search(SearchRequest(url, "sentinel-2-l2a", (-180, -90, 180, 90), max_cloud_cover=30))
    assert res.cloud_filter == "client"
    covers = {i.id: i.properties["eo:cloud_cover"] for i in all_items}
    assert all(covers[i.id] <= 30 for i in res.items)
    assert sorted(res.dropped_cloudy) == sorted(k for k, v in covers.items() if v > 30)
    assert res.items and res.dropped_cloudy, "the demo world has clear and cloudy scenes"


def test_worldcover_and_planetary_computer_dialect(world_apis: dict[str, str]) -> None:
    url = world_apis["planetary-computer"]
    wc = search(SearchRequest(url, "esa-worldcover", DOLOMITES.bbox))
    assert [i.id for i in wc.items] == [
        "ESA_WorldCover_10m_2021_v200_N45E009",
        "ESA_WorldCover_10m_2021_v200_N45E012",
    ]
    pc = search(SearchRequest(url, "sentinel-2-l2a", DOLOMITES.bbox))
    assert pc.items and all(
        "B04" in i.assets and "raster:bands" not in i.assets["B04"].extra_fields for i in pc.items
    )
    finnmark = next(a for a in preset_areas("demo") if a.name == "finnmark")
    assert (
        search(SearchRequest(url, "sentinel-2-l2a", finnmark.bbox)).items == []
    )  # only some areas


def test_both_dialects_read_the_same_reflectance(world_apis: dict[str, str]) -> None:
    """odc-stac loads one scene through either catalogue; scale/offset come from each dialect."""
    bbox = (12.0, 46.57, 12.02, 46.59)
    es = search(
        SearchRequest(
            world_apis["earth-search"], "sentinel-2-l2a", bbox, "2021-07-03/2021-07-03T23:59:59Z"
        )
    ).items
    pc = search(
        SearchRequest(
            world_apis["planetary-computer"],
            "sentinel-2-l2a",
            bbox,
            "2021-07-03/2021-07-03T23:59:59Z",
        )
    ).items
    es = [i for i in es if i.properties["grid:code"] == "MGRS-33TTM"]
    pc = [i for i in pc if i.properties["s2:mgrs_tile"] == "33TTM"]
    assert len(es) == len(pc) == 1
    a = odc.stac.load(es, bands=["red"], bbox=bbox, resolution=10, crs="EPSG:32633").red.values
    b = odc.stac.load(pc, bands=["B04"], bbox=bbox, resolution=10, crs="EPSG:32633").B04.values
    assert np.array_equal(a, b) and (a > 0).mean() > 0.95
    s1, o1 = dialects.reflectance_scale_offset(es[0].to_dict(), "red")
    s2, o2 = dialects.reflectance_scale_offset(pc[0].to_dict(), "red")
    assert (s1, o1) == (s2, o2) == (0.0001, -0.1)
    refl = a[a > 0] * s1 + o1
    assert 0.0 < float(np.median(refl)) < 0.5


def test_real_fixture_search(real_api: str) -> None:
    # Slovenia/Croatia: both real Earth Search scenes; Sao Tome: the real WorldCover tile.
    res = search(
        SearchRequest(real_api, "sentinel-2-l2a", (15.2, 45.8, 15.8, 46.2), "2023-08-01/2023-08-31")
    )
    assert {i.id for i in res.items} == {"S2A_33TWM_20230815_0_L2A", "S2A_33TWL_20230815_0_L2A"}
    wc = search(SearchRequest(real_api, "esa-worldcover", (6.5, 0.2, 6.8, 0.5)))
    assert [i.id for i in wc.items] == ["ESA_WorldCover_10m_2021_v200_N00E006"]
    strict = search(
        SearchRequest(real_api, "sentinel-2-l2a", (15.2, 45.8, 15.8, 46.2), max_cloud_cover=0.1)
    )
    assert (
        strict.cloud_filter == "client" and strict.items == [] and len(strict.dropped_cloudy) == 2
    )
    pc = search(SearchRequest(real_api, "sentinel-2-l2a", (-148, 60.5, -147.5, 61.0)))
    assert dialects.detect(pc.items[0].to_dict()) == "planetary-computer"
    assert dialects.reflectance_scale_offset(pc.items[0].to_dict(), "red") == (
        0.0001,
        0.0,
    )  # baseline 02.12


def test_real_fixture_pixels_readable(real_api: str) -> None:
    items = search(SearchRequest(real_api, "sentinel-2-l2a", (15.4, 46.0, 15.5, 46.1))).items
    data = odc.stac.load(
        items[:1], bands=["red", "scl"], bbox=(15.4, 46.0, 15.5, 46.1), resolution=120
    )
    assert int((data.red.values > 0).sum()) > 0


def test_unreachable_api_error_names_url() -> None:
    with pytest.raises(StacSearchError, match=r"127\.0\.0\.1:9"):
        search(SearchRequest("http://127.0.0.1:9", "sentinel-2-l2a", (0, 0, 1, 1)))


def test_unknown_band_error() -> None:
    with pytest.raises(KeyError, match="no asset in the earth-search dialect"):
        dialects.asset_key("earth-search", "coastal")


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 429/503 to the first requests, then forwards to the real API on loopback."""

    upstream = ""
    faults: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[str, int]]] = []

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.faults:
            code = self.faults.pop(0)
            self.seen.append((self.command, code))
            self.send_response(code)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        req = urllib.request.Request(
            self.upstream + self.path,
            data=body or None,
            method=self.command,
            headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
        )
        with urllib.request.urlopen(req) as r:
            data = r.read()
            self.seen.append((self.command, r.status))
            self.send_response(r.status)
            self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_POST = _handle

    def log_message(self, *args: object) -> None:
        pass


def test_search_retries_429_and_5xx(world_apis: dict[str, str]) -> None:
    _Flaky.upstream = world_apis["earth-search"]
    _Flaky.faults = [503, 429, 502]
    _Flaky.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        res = search(SearchRequest(url, "sentinel-2-l2a", DOLOMITES.bbox, backoff=0.01))
        direct = search(SearchRequest(world_apis["earth-search"], "sentinel-2-l2a", DOLOMITES.bbox))
        assert [i.id for i in res.items] == [i.id for i in direct.items] != []
        assert [c for _m, c in _Flaky.seen[:3]] == [503, 429, 502]
        # Out of retries: the error names the API.
        _Flaky.faults = [503] * 10
        with pytest.raises(StacSearchError, match=url.replace(".", r"\.")):
            search(SearchRequest(url, "sentinel-2-l2a", DOLOMITES.bbox, retries=2, backoff=0.01))
    finally:
        server.shutdown()
