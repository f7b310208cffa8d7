"""Readers retry a failed read on a fresh handle, count it, and name what outlasts the retries;
an href refused for its expired signature is re-signed (counted apart) and never logged."""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from cenlib.ingest.read import RETRIES, AssetReadError, AssetRef, Readers
from cenlib.ingest.sign import TOKEN_API, expired, signing_rule
from cenlib.stac import files
from cenlib.stac.files import ServeOptions, serve_files
from cenlib.stac.signatures import is_masked, mask_signature, redact, strip_signature


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


def _noise_cog(path: Path) -> np.ndarray:
    """1024 x 1024 of noise in 128 px tiles: a far tile is never in the header's first GET."""
    data = np.random.default_rng(14).integers(0, 10_000, (1024, 1024), dtype="uint16")
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="COG", width=1024, height=1024, count=1, dtype="uint16",
        crs="EPSG:32632", transform=from_origin(600000, 5200000, 10, 10), blocksize=128,
    ) as ds:  # fmt: skip
        ds.write(data, 1)
    return data


def _wait_expiry(href: str) -> None:
    expiry = float(parse_qs(urlsplit(href).query)["exp"][0])
    time.sleep(max(0.0, expiry - time.time() + 0.05))


def test_an_expired_signature_is_re_signed_not_retried(tmp_path: Path) -> None:
    """Opened with a valid token that expires before a far tile is read: the read is refused,
    the href re-signed through the store's token API and read, and counted as a re-sign."""
    data = _noise_cog(tmp_path / "s2" / "b04.tif")
    with serve_files(tmp_path, ServeOptions(token_ttl=1.0)) as fs:
        href = fs.sign(fs.href("s2/b04.tif"))
        ref = AssetRef("S2X_TEST", "red", href)
        with Readers() as readers:
            readers.sleep = lambda s: pytest.fail("backed off before a re-sign")
            readers.dataset(ref)
            _wait_expiry(href)
            got = readers.read(ref, Window(896, 896, 128, 128))
            # The re-signed href serves the next reads of the same asset.
            again = readers.read(ref, Window(768, 896, 128, 128))
        refused = [r for r in fs.log if r.status == 403]
        c = fs.counters
    assert (got == data[896:, 896:]).all() and (again == data[896:, 768:896]).all()
    assert readers.resigns == {href: 1} and readers.retries == {}
    assert refused and c.tokens == 1  # one token, from GET /api/sas/v1/token/s2
    assert TOKEN_API == files.TOKEN_API  # the client asks where the store answers
    assert any(r.path == f"{TOKEN_API}/s2" and r.status == 200 for r in fs.log)


def test_an_expired_href_is_re_signed_at_open(tmp_path: Path) -> None:
    data = _noise_cog(tmp_path / "s2" / "b04.tif")
    with serve_files(tmp_path, ServeOptions(token_ttl=1.0)) as fs:
        href = fs.sign(fs.href("s2/b04.tif"))
        _wait_expiry(href)
        ref = AssetRef("S2X_TEST", "red", href)
        with Readers() as readers:
            got = readers.read(ref, Window(0, 0, 128, 128))
        c = fs.counters
    assert (got == data[:128, :128]).all()
    assert readers.resigns == {href: 1} and readers.retries == {}
    assert c.forbidden >= 1 and c.tokens == 1


def test_a_failed_re_sign_names_the_asset_and_keeps_the_token_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file at the root is in no container, so the token API has no token for it (404)."""
    _noise_cog(tmp_path / "b04.tif")
    with serve_files(tmp_path, ServeOptions(token_ttl=1.0)) as fs:
        href = fs.sign(fs.href("b04.tif"))
        _wait_expiry(href)
        ref = AssetRef("S2X_TEST", "red", href)
        with (
            caplog.at_level(logging.DEBUG),
            Readers() as readers,
            pytest.raises(AssetReadError) as e,
        ):
            readers.dataset(ref)
    err = e.value
    assert err.item_id == "S2X_TEST" and err.asset == "red"
    assert err.href == fs.href("b04.tif")  # the token stripped
    assert "re-signing by the token-api rule failed" in err.reason and "HTTP 404" in err.reason
    assert f"{fs.url}{TOKEN_API}/<container>" in err.reason  # how to fix it
    token = parse_qs(urlsplit(href).query)["token"][0]
    assert token not in str(err)
    assert caplog.records and not any(token in r.getMessage() for r in caplog.records)
    assert readers.resigns == {}


def test_signatures_are_stripped_and_the_rule_follows_the_host() -> None:
    pc = (
        "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/32/T/B04.tif"
        "?st=2024-01-01T00%3A00%3A00Z&se=2024-01-02T00%3A00%3A00Z&sp=rl&sv=2021-06-08"
        "&sr=c&skoid=abc&sig=SECRET%3D"
    )
    assert strip_signature(pc) == pc.split("?")[0]
    assert signing_rule(pc) == "planetary-computer" and expired(pc)
    local = "http://127.0.0.1:8/data/x.tif?a=1&token=SECRET&exp=1.0&sr=c"
    assert strip_signature(local) == "http://127.0.0.1:8/data/x.tif?a=1"
    assert signing_rule(local) == "token-api" and expired(local)
    assert not expired("http://127.0.0.1:8/data/x.tif?token=t&exp=4102444800")
    text = "x.tif?token=SECRET&exp=2, band 1: failed; see /vsicurl/" + pc
    assert "SECRET" not in redact(text) and "x.tif, band 1: failed" in redact(text)
    assert strip_signature("/local/x.tif") == "/local/x.tif"
    assert str(AssetReadError("I", "red", local, f"on {local}")).count("SECRET") == 0
    # Masked for writing: the names stay, the values go, and a reader can tell.
    masked = mask_signature(local)
    assert "SECRET" not in masked and "a=1" in masked and "token=redacted" in masked
    assert is_masked(masked) and not is_masked(local) and not expired(masked)
    assert strip_signature(masked) == strip_signature(local)
    assert mask_signature("/local/x.tif") == "/local/x.tif" and not is_masked("/local/x.tif")
    assert mask_signature("http://h/x.tif?a=1") == "http://h/x.tif?a=1"


def test_a_pool_reads_assets_at_once_in_their_order(tmp_path: Path) -> None:
    """Readers.map: the same arrays as one after another, their waits on a 0.2 s store
    overlapping; the first failure in order is raised, after every read has finished."""
    data = _noise_cog(tmp_path / "s2" / "b04.tif")
    for name in ("b02", "b03", "b08", "b11", "b12"):
        shutil.copyfile(tmp_path / "s2" / "b04.tif", tmp_path / "s2" / f"{name}.tif")
    window = Window(896, 0, 128, 128)
    with (
        serve_files(tmp_path, ServeOptions(latency=0.2)) as fs,
        ThreadPoolExecutor(4) as pool,
        Readers(pool=pool) as readers,
    ):

        def refs(*names: str) -> list[AssetRef]:
            return [AssetRef("S2X_TEST", n, fs.href(f"s2/{n}.tif")) for n in names]

        def read(ref: AssetRef) -> np.ndarray:
            return readers.read(ref, window)

        t0 = time.monotonic()
        alone = [read(r) for r in refs("b02", "b03", "b04")]  # fresh files: nothing cached
        t1 = time.monotonic()
        together = readers.map(read, refs("b08", "b11", "b12"))
        t2 = time.monotonic()
        missing = refs("b04", "nowhere", "b03", "gone")
        with pytest.raises(AssetReadError) as e:
            readers.map(readers.dataset, missing)
    for a in alone + together:
        np.testing.assert_array_equal(a, data[:128, 896:])
    assert t2 - t1 < 0.6 * (t1 - t0), (t1 - t0, t2 - t1)
    assert e.value.asset == "nowhere"  # the first in order, as a loop would raise
    assert any(r.path == "/s2/gone.tif" for r in fs.log)  # read at once: a loop stops first
