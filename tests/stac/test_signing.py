"""Planetary Computer signing, against a local server speaking the SAS token API."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import planetary_computer
import pytest
from planetary_computer.settings import Settings

from cenlib.ingest.stage import signer

BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/WM/B04.tif"


class _TokenApi(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []
    ttl_s: ClassVar[int] = 3600

    def do_GET(self) -> None:
        self.paths.append(self.path)
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.ttl_s)
        n = len(self.paths)
        body = json.dumps(
            {
                "msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "token": f"st=2026-01-01&se=2026-12-31&sp=rl&sig=token{n}",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def token_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/sas/v1/token"
    monkeypatch.setenv("PC_SDK_SAS_URL", url)
    Settings.get.cache_clear()
    planetary_computer.sas.TOKEN_CACHE.clear()
    _TokenApi.paths = []
    try:
        yield url
    finally:
        server.shutdown()
        Settings.get.cache_clear()
        planetary_computer.sas.TOKEN_CACHE.clear()


def test_hrefs_are_signed_at_read_time_and_re_signed_near_expiry(token_api: str) -> None:
    sign = signer("planetary-computer")
    _TokenApi.ttl_s = 3600
    a, b = sign(BLOB), sign(BLOB)
    assert a == b and a.startswith(BLOB + "?") and "sig=token1" in a
    assert _TokenApi.paths == ["/api/sas/v1/token/sentinel2l2a01/sentinel2-l2"]  # cached
    # A token with under a minute left is replaced before use.
    planetary_computer.sas.TOKEN_CACHE.clear()
    _TokenApi.ttl_s = 30
    first = sign(BLOB)
    second = sign(BLOB)
    assert "sig=token2" in first and "sig=token3" in second
    # Local files and non-Azure URLs pass through untouched; "none" never signs.
    assert sign("file:///data/B04.tif") == "file:///data/B04.tif"
    assert signer("none")(BLOB) == BLOB
