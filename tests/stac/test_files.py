"""The loopback object store: byte ranges as S3 and Azure answer them, no way out of the root,
first-byte latency that overlaps, seeded faults, expiring signed URLs, truncated objects, and
GDAL reading a real COG through it. Every request is real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import rasterio
from planetary_computer.sas import SASToken
from rasterio.errors import RasterioError
from rasterio.transform import from_origin
from rasterio.windows import Window

from cenlib.stac.files import (
    TOKEN_API,
    Faults,
    FileServer,
    FileServerError,
    ServeOptions,
    byte_range,
    rehref,
    serve_files,
)
from cenlib.stac.server import absolutize

SIZE = 100_000
# In-process GDAL must not probe sidecar files: rasterio holds the GIL while GDAL looks for them
# (reading the geotransform), so this server's thread could not answer until curl gives up.
GDAL = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_TIMEOUT": "20"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with a random blob in a folder, an empty file and a 1024 x 1024 COG (its data
    beside it as .npy), and a secret file next to the root that must never be served."""
    base = tmp_path_factory.mktemp("files")
    root = base / "root"
    (root / "s2" / "T33").mkdir(parents=True)
    rng = np.random.default_rng(14)
    (root / "s2" / "T33" / "blob.bin").write_bytes(rng.bytes(SIZE))
    (root / "empty.bin").write_bytes(b"")
    (base / "secret.txt").write_text("top secret")
    data = rng.integers(0, 10_000, (1024, 1024), dtype="uint16")
    with rasterio.open(
        root / "cog.tif",
        "w",
        driver="COG",
        width=1024,
        height=1024,
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(600_000, 5_200_000, 10, 10),
        blocksize=256,
        compress="deflate",
    ) as ds:
        ds.write(data, 1)
    np.save(base / "cog.npy", data)
    return root


@pytest.fixture
def server(store: Path) -> Iterator[FileServer]:
    with serve_files(store) as s:
        yield s


def fetch(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def raw(server: FileServer, target: str) -> tuple[int, bytes]:
    """A request whose target goes out byte for byte (urllib and curl would normalise it)."""
    conn = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_full_and_ranged_reads_return_the_exact_bytes(server: FileServer, store: Path) -> None:
    blob = (store / "s2" / "T33" / "blob.bin").read_bytes()
    url = server.href("s2/T33/blob.bin")
    assert url == f"{server.url}/s2/T33/blob.bin"
    status, h, body = fetch(url)
    assert (status, body) == (200, blob)
    assert h["content-length"] == str(SIZE) and h["accept-ranges"] == "bytes"
    assert h["etag"].startswith('"') and h["last-modified"].endswith("GMT")
    assert "content-range" not in h
    for spec, (a, b) in {
        "bytes=10-19": (10, 19),
        "bytes=99990-": (99_990, SIZE - 1),
        "bytes=-5": (SIZE - 5, SIZE - 1),
        "bytes=99995-200000": (99_995, SIZE - 1),  # the end is clipped to the object
        "bytes=-200000": (0, SIZE - 1),
    }.items():
        status, h, body = fetch(url, Range=spec)
        assert status == 206, spec
        assert body == blob[a : b + 1], spec
        assert h["content-range"] == f"bytes {a}-{b}/{SIZE}"
        assert h["content-length"] == str(b - a + 1)
    # What S3 does with a Range it does not take: the whole object, 200.
    for ignored in ("bytes=0-1,5-6", "bytes=5-2", "items=0-1", "bytes=x-y"):
        status, h, body = fetch(url, Range=ignored)
        assert (status, len(body), "content-range" in h) == (200, SIZE, False), ignored
    assert byte_range("bytes=0-1,5-6", SIZE) is None
    assert [r.range for r in server.log][1:3] == ["bytes=10-19", "bytes=99990-"]
    assert server.counters.partial == 5 and server.counters.bytes_sent > 5 * SIZE


def test_head_answers_the_headers_of_the_get(server: FileServer) -> None:
    url = server.href("s2/T33/blob.bin")
    _, get_h, _ = fetch(url, Range="bytes=0-99")
    status, h, body = fetch(url, "HEAD", Range="bytes=0-99")
    assert (status, body) == (206, b"")
    assert {k: h[k] for k in ("content-length", "content-range", "etag", "last-modified")} == {
        k: get_h[k] for k in ("content-length", "content-range", "etag", "last-modified")
    }
    status, h, body = fetch(url, "HEAD")
    assert (status, h["content-length"], body) == (200, str(SIZE), b"")
    assert [(r.method, r.bytes_sent) for r in server.log][1:] == [("HEAD", 0), ("HEAD", 0)]


def test_a_range_past_the_end_is_416(server: FileServer) -> None:
    for path, spec, size in [
        ("s2/T33/blob.bin", f"bytes={SIZE}-", SIZE),
        ("s2/T33/blob.bin", "bytes=-0", SIZE),
        ("empty.bin", "bytes=0-", 0),
    ]:
        status, h, body = fetch(server.href(path), Range=spec)
        assert status == 416, spec
        assert h["content-range"] == f"bytes */{size}"
        assert b"<Code>InvalidRange</Code>" in body
    assert fetch(server.href("empty.bin"))[:3:2] == (200, b"")


def test_missing_files_and_directories_are_404_and_never_listed(server: FileServer) -> None:
    for path in ("/nope.tif", "/s2", "/s2/", "/s2/T33/", "/"):
        status, h, body = fetch(server.url + path)
        assert status == 404, path
        assert b"<Code>BlobNotFound</Code>" in body and b"blob.bin" not in body
        assert h["content-length"] == str(len(body))
    assert server.counters.not_found == 5


def test_nothing_outside_the_root_can_be_read(server: FileServer, store: Path) -> None:
    (store / "s2" / "out").symlink_to(store.parent / "secret.txt")
    try:
        for target in (
            "/../secret.txt",
            "/s2/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/s2/..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/s2/out",  # a symlink leading out
            "/" + str(store.parent / "secret.txt"),
            "/etc/passwd",
        ):
            status, body = raw(server, target)
            assert status in (400, 404), target
            assert b"top secret" not in body and b"root:" not in body, target
        assert raw(server, "/s2/T33/blob.bin")[0] == 200  # the same client reads inside
    finally:
        (store / "s2" / "out").unlink()
    with pytest.raises(FileServerError, match="not under the served root"):
        server.href("../secret.txt")


def test_latency_delays_every_response_and_concurrent_requests_overlap(store: Path) -> None:
    latency = 0.2
    with serve_files(store, ServeOptions(latency=latency)) as s:
        url = s.href("s2/T33/blob.bin")
        t = time.monotonic()
        assert fetch(url, Range="bytes=0-9")[0] == 206
        assert time.monotonic() - t >= latency
        assert fetch(s.url + "/missing")[0] == 404  # errors wait too
        t = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: fetch(url, Range=f"bytes={i}-{i}")[0], range(8)))
        wall = time.monotonic() - t
        assert statuses == [206] * 8
        assert wall < 4 * latency, f"8 requests took {wall:.2f} s: latency is not overlapping"
        assert all(r.seconds >= latency for r in s.log)


def test_bandwidth_paces_each_body(store: Path) -> None:
    blob = (store / "s2" / "T33" / "blob.bin").read_bytes()
    with serve_files(store, ServeOptions(bandwidth=400_000)) as s:
        t = time.monotonic()
        assert fetch(s.href("s2/T33/blob.bin"))[2] == blob
        assert time.monotonic() - t >= 0.9 * SIZE / 400_000


def test_503s_come_at_the_seeded_rate_and_reproduce(store: Path) -> None:
    def statuses(seed: int) -> list[int]:
        with serve_files(store, ServeOptions(faults=Faults(error_rate=0.3, seed=seed))) as s:
            url = s.href("s2/T33/blob.bin")
            got = [fetch(url, Range="bytes=0-99") for _ in range(150)]
            busy = [h for status, h, _ in got if status == 503]
            assert all(h["retry-after"] == "0" for h in busy)
            assert all(body == b"" or status == 206 for status, _, body in got if status != 503)
            assert s.counters.faults == {"error": len(busy), "reset": 0, "slow": 0}
            assert [r.fault == "error" for r in s.log] == [st == 503 for st, _, _ in got]
            return [status for status, _, _ in got]

    first = statuses(seed=7)
    assert 25 <= first.count(503) <= 65  # 45 expected
    assert set(first) == {206, 503}
    assert statuses(seed=7) == first  # same seed, same requests: same faults
    assert statuses(seed=8) != first


def test_resets_cut_the_body_at_its_half_and_are_logged(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blob = (store / "s2" / "T33" / "blob.bin").read_bytes()
    with serve_files(store, ServeOptions(faults=Faults(reset_rate=0.4, seed=3))) as s:
        url = s.href("s2/T33/blob.bin")
        ok = failed = 0
        for _ in range(40):
            try:
                assert fetch(url)[2] == blob
                ok += 1
            except (http.client.IncompleteRead, ConnectionError, urllib.error.URLError):
                failed += 1
        assert 6 <= failed <= 26 and ok + failed == 40  # 16 expected
        resets = [r for r in s.log if r.fault == "reset"]
        assert len(resets) == failed == s.counters.faults["reset"]
        assert {(r.status, r.bytes_sent) for r in resets} == {(200, SIZE // 2)}
        # The connection is gone, the server is not: the next request is answered.
        assert fetch(url, "HEAD")[0] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_client_that_hangs_up_ends_its_response(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = (store / "cog.tif").stat().st_size
    # At 1 MB/s the body takes seconds: loopback buffers could otherwise swallow all of it
    # before the hang-up reaches the server.
    with serve_files(store, ServeOptions(bandwidth=1e6)) as s:
        conn = http.client.HTTPConnection(urlsplit(s.url).netloc, timeout=10)
        conn.request("GET", "/cog.tif")
        r = conn.getresponse()
        assert r.status == 200 and len(r.read(1000)) == 1000
        conn.close()
        deadline = time.monotonic() + 3
        while not len(s.log) and time.monotonic() < deadline:
            time.sleep(0.02)
        (record,) = s.log
        assert record.status == 200 and record.bytes_sent < size
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_stall_holds_the_body_for_slow_seconds(store: Path) -> None:
    blob = (store / "s2" / "T33" / "blob.bin").read_bytes()
    with serve_files(store, ServeOptions(faults=Faults(slow_rate=1.0, slow_seconds=0.3))) as s:
        t = time.monotonic()
        assert fetch(s.href("s2/T33/blob.bin"))[2] == blob
        assert time.monotonic() - t >= 0.3
        t = time.monotonic()
        assert fetch(s.href("s2/T33/blob.bin"), "HEAD")[0] == 200  # no body, no stall
        assert time.monotonic() - t < 0.3
        assert [r.fault for r in s.log] == ["slow", None]


def test_signed_urls_expire_with_azure_s_403(store: Path) -> None:
    with serve_files(store, ServeOptions(token_ttl=1.0)) as s:
        url = s.href("s2/T33/blob.bin")
        status, h, body = fetch(url)
        assert status == 403 and h["content-type"] == "application/xml"
        assert b"<Code>AuthenticationFailed</Code>" in body
        signed = s.sign(url)
        assert signed.startswith(url + "?token=") and "&exp=" in signed
        assert fetch(signed, Range="bytes=0-9")[0] == 206
        tampered = signed.replace("token=", "token=0")
        assert b"Signature did not match" in fetch(tampered)[2]
        other = s.sign(s.href("empty.bin")).replace("/empty.bin", "/s2/T33/blob.bin")
        assert fetch(other)[0] == 403  # a token is for one path
        expiry = float(parse_qs(urlsplit(signed).query)["exp"][0])
        time.sleep(max(0.0, expiry - time.time() + 0.05))
        status, _, body = fetch(signed)
        assert status == 403
        assert b"Signature not valid in the specified time frame" in body
        assert fetch(s.sign(signed))[0] == 200  # re-signing replaces token and expiry
        assert s.counters.forbidden == 4
        # Other query parameters stay; hrefs elsewhere are not this server's to sign.
        assert s.sign(url + "?a=1").startswith(url + "?a=1&token=")
        assert s.sign("https://example.com/x.tif") == "https://example.com/x.tif"
    with serve_files(store) as s:
        assert s.sign(s.href("empty.bin")) == s.href("empty.bin")  # no token_ttl: open store


def test_the_token_api_speaks_the_planetary_computer_s_protocol(store: Path) -> None:
    """GET /api/sas/v1/token/<container> -> {"token", "msft:expiry"}; href + "?" + token reads
    every file of that container (and no other) until the expiry, as a container SAS does."""
    with serve_files(store, ServeOptions(token_ttl=1.0)) as s:
        t0 = time.time()
        status, h, body = fetch(f"{s.url}{TOKEN_API}/s2")
        assert status == 200 and h["content-type"] == "application/json"
        doc = json.loads(body)
        assert set(doc) == {"token", "msft:expiry"} and doc["msft:expiry"].endswith("Z")
        expiry = dt.datetime.fromisoformat(doc["msft:expiry"].replace("Z", "+00:00"))
        assert 0.5 < expiry.timestamp() - t0 <= 1.5
        blob = s.href("s2/T33/blob.bin")
        # The planetary_computer package's own model reads the answer and signs with it.
        signed = SASToken(**doc).sign(blob)
        assert signed.href == f"{blob}?{doc['token']}" and signed.expiry == expiry
        assert fetch(signed.href, Range="bytes=0-9")[0] == 206
        # The same token does not open a file outside its container.
        assert fetch(f"{s.href('cog.tif')}?{doc['token']}")[0] == 403
        forged = doc["token"].replace("sr=c", "sr=b")  # a path token it is not
        assert fetch(f"{blob}?{forged}")[0] == 403
        assert fetch(f"{s.url}{TOKEN_API}/nowhere")[0] == 404  # no such container
        assert fetch(f"{s.url}{TOKEN_API}/empty.bin")[0] == 404  # a file, not a container
        time.sleep(max(0.0, expiry.timestamp() - time.time() + 0.05))
        status, _, body = fetch(f"{blob}?{doc['token']}")
        assert status == 403 and b"Signature not valid in the specified time frame" in body
        c = s.counters
        assert c.tokens == 1 and c.forbidden == 3 and c.not_found == 2
    with serve_files(store) as s:  # an open store hands out no tokens
        assert fetch(f"{s.url}{TOKEN_API}/s2")[0] == 404 and s.counters.tokens == 0


def test_gdal_reads_a_cog_window_through_ranges(server: FileServer, store: Path) -> None:
    data = np.load(store.parent / "cog.npy")
    window = Window(300, 200, 400, 300)
    with rasterio.Env(**GDAL), rasterio.open("/vsicurl/" + server.href("cog.tif")) as ds:
        opened = len(server.log)
        got = ds.read(1, window=window)
        assert ds.crs.to_epsg() == 32633
    np.testing.assert_array_equal(got, data[200:500, 300:700])
    log = server.log.snapshot()
    assert {r.path for r in log} == {"/cog.tif"}  # no sidecar probes, no listing
    gets = [r for r in log if r.method == "GET"]
    assert gets and all(r.range and r.status == 206 for r in gets)
    assert opened <= 3  # a COG opens on its header: HEAD, then the first 16 KiB
    assert server.counters.bytes_sent < (store / "cog.tif").stat().st_size / 2


def test_gdal_reads_through_signed_urls(store: Path) -> None:
    data = np.load(store.parent / "cog.npy")
    with serve_files(store, ServeOptions(token_ttl=60)) as s:
        href = s.sign(s.href("cog.tif"))
        with rasterio.Env(**GDAL), rasterio.open("/vsicurl/" + href) as ds:
            got = ds.read(1, window=Window(0, 0, 64, 64))
        np.testing.assert_array_equal(got, data[:64, :64])
        assert s.counters.forbidden == 0 and s.counters.requests >= 2


def test_a_truncated_object_is_short_everywhere_and_rasterio_fails_by_name(
    store: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(store / "cog.tif", root / "short.tif")  # a name no other test's GDAL cached
    full = (root / "short.tif").read_bytes()
    half = len(full) // 2
    with serve_files(root, ServeOptions(truncate=frozenset({"short.tif"}))) as s:
        url = s.href("short.tif")
        assert fetch(url, "HEAD")[1]["content-length"] == str(half)
        assert fetch(url)[2] == full[:half]
        assert fetch(url, Range=f"bytes={half}-")[0] == 416
        with (
            pytest.raises(RasterioError),
            rasterio.Env(**GDAL),
            rasterio.open("/vsicurl/" + url) as ds,
        ):
            ds.read(1)


def test_rehref_points_local_assets_at_the_server(tmp_path: Path) -> None:
    root = tmp_path / "world"
    (root / "cogs").mkdir(parents=True)
    source = root / "stac" / "item.json"
    item: dict[str, Any] = {
        "type": "Feature",
        "id": "x",
        "links": [],
        "assets": {
            "relative": {"href": "../cogs/B 04.tif", "type": "image/tiff"},
            "absolute": {"href": str(root / "cogs" / "B08.tif")},
            "uri": {"href": (root / "cogs" / "SCL.tif").as_uri()},
            "outside": {"href": (tmp_path / "elsewhere.tif").as_uri()},
            "remote": {"href": "https://example.com/B04.tif"},
        },
    }
    loaded = absolutize(item, source)  # what `serve` holds before a transform
    out = rehref(loaded, "http://127.0.0.1:9/", root, sign=lambda u: u + "?sig=1")
    hrefs = {k: a["href"] for k, a in out["assets"].items()}
    assert hrefs == {
        "relative": "http://127.0.0.1:9/cogs/B%2004.tif?sig=1",
        "absolute": "http://127.0.0.1:9/cogs/B08.tif?sig=1",
        "uri": "http://127.0.0.1:9/cogs/SCL.tif?sig=1",
        "outside": (tmp_path / "elsewhere.tif").as_uri(),
        "remote": "https://example.com/B04.tif",
    }
    assert out["assets"]["relative"]["type"] == "image/tiff"
    assert loaded["assets"]["absolute"]["href"] == (root / "cogs" / "B08.tif").as_uri()
    assert rehref(loaded, "http://h", root)["assets"]["uri"]["href"] == "http://h/cogs/SCL.tif"


def test_rehrefed_items_are_readable_through_the_server(store: Path) -> None:
    item = {"assets": {"data": {"href": (store / "cog.tif").as_uri()}}}
    with serve_files(store) as s:
        href = rehref(item, s.url, store, s.sign)["assets"]["data"]["href"]
        assert href == s.href("cog.tif")
        assert fetch(href, Range="bytes=0-3")[2] == (store / "cog.tif").read_bytes()[:4]


def test_the_server_stops_with_the_block(store: Path) -> None:
    with serve_files(store) as s:
        url = s.href("empty.bin")
        assert fetch(url)[0] == 200
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        fetch(url)
    assert not any(t.name.startswith("cen-files-") for t in threading.enumerate())


def test_options_are_checked_once(store: Path) -> None:
    with pytest.raises(FileServerError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(FileServerError, match="bandwidth"):
        ServeOptions(bandwidth=0)
    assert ServeOptions(truncate=frozenset({"/a/b.tif"})).truncate == {"a/b.tif"}
    with pytest.raises(FileServerError, match="no such directory"), serve_files(store / "nope"):
        pass
