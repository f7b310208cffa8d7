"""The review server over real HTTP (urllib against uvicorn): the token gate, the API, the PNGs."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from review_support import XSS_IMG, XSS_SCRIPT

from cenlib.classes import palette_rgb
from cenlib.ingest import array, open_group
from cenlib.review import ReviewServer, read_decisions

NO_REDIRECT = urllib.request.build_opener(
    type("NoRedirect", (urllib.request.HTTPRedirectHandler,), {"redirect_request": lambda *a: None})
)


@pytest.fixture
def server(run_dir: Path) -> Iterator[ReviewServer]:
    with ReviewServer(run_dir, reviewer="tester") as s:
        yield s


def fetch(
    url: str, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with NO_REDIRECT.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def api(s: ReviewServer, path: str, body: dict[str, Any] | None = None) -> Any:
    status, _, data = fetch(s.base + path, {"X-Review-Token": s.token}, body)
    assert status == 200, data
    return json.loads(data)


def test_every_request_without_the_token_is_refused(server: ReviewServer) -> None:
    pid = api(server, "/api/patches")["patches"][0]["id"]
    for path in ("/", "/api/patches", f"/api/patch/{pid}", f"/img/{pid}/rgb.png",
                 "/static/review.js", "/favicon.ico", "/nowhere"):  # fmt: skip
        for headers in ({}, {"X-Review-Token": "wrong"}, {"Cookie": "cen_review_x=wrong"}):
            status, _, body = fetch(server.base + path, headers)
            assert status == 403, (path, headers)
            assert b"access token" in body and b"?token=" in body
        status, _, _ = fetch(server.base + path + "?token=" + server.token[:-1])
        assert status == 403, path


def test_the_token_in_the_url_becomes_a_strict_http_only_cookie(server: ReviewServer) -> None:
    status, headers, _ = fetch(server.url)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert server.token in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    jar = cookie.split(";", 1)[0]
    status, headers, page = fetch(server.base + "/", {"Cookie": jar})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert f'<meta name="review-token" content="{server.token}">'.encode() in page
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert b"http://" not in page and b"https://" not in page  # no external resources
    for name in ("review.js", "review.css"):
        status, _, text = fetch(f"{server.base}/static/{name}", {"Cookie": jar})
        assert status == 200 and b"http://" not in text and b"https://" not in text
    assert fetch(server.base + "/api/patches", {"Cookie": jar})[0] == 200


def test_a_post_needs_the_token_in_its_header(server: ReviewServer, run_dir: Path) -> None:
    p = api(server, "/api/patches")["patches"][0]
    body = {"patch_id": p["id"], "key": p["key"], "decision": "accept"}
    jar = f"{fetch(server.url)[1]['set-cookie'].split(';', 1)[0]}"
    url = server.base + "/api/decision"
    assert fetch(url, {"Cookie": jar, "Content-Type": "application/json"}, body)[0] == 403
    assert fetch(f"{url}?token={server.token}", {"Content-Type": "text/plain"}, body)[0] == 403
    assert read_decisions(run_dir) == {}
    out = api(server, "/api/decision", body)
    assert out["decision"]["decision"] == "accept" and out["decision"]["reviewer"] == "tester"
    assert (out["reviewed"], out["total"]) == (1, 5)
    assert read_decisions(run_dir)[p["id"]].key == p["key"]


def test_the_patch_list_its_filters_and_progress(server: ReviewServer) -> None:
    d = api(server, "/api/patches")
    assert (d["reviewed"], d["total"], d["reviewer"]) == (0, 5, "tester")
    rows = d["patches"]
    assert [r["status"] for r in rows] == ["pass", "failed", "failed", "repaired", "pass"]
    assert rows[1]["types"] == ["hallucinated", "misplaced"]
    assert 2 in rows[1]["classes"]  # developed area: named by a violation, absent from the map
    assert all(r["classes"] and r["decision"] is None for r in rows)
    assert [c["name"] for c in d["classes"]][:3] == ["background", "water", "developed area"]


def test_a_patch_in_detail_caption_segments_and_statistics(server: ReviewServer) -> None:
    rows = api(server, "/api/patches")["patches"]
    d = api(server, f"/api/patch/{rows[1]['id']}")
    assert "".join(s["text"] for s in d["segments"]) == d["caption"]
    marked = {s["text"]: s for s in d["segments"] if s["violations"]}
    assert marked["Developed area"]["cls"] == 2 and marked["Developed area"]["violations"] == [0]
    assert marked["water"]["cls"] == 1 and marked["water"]["violations"] == [1]
    assert [v["class"] for v in d["violations"]] == [2, 1]  # class names become indices
    assert "0.0 %" in d["violations"][0]["reason"]
    stats = d["stats"]
    assert stats["regions"][0] == "whole" and len(stats["regions"]) == 6
    assert abs(sum(r["shares"][0] for r in stats["rows"]) - 1) < 1e-3
    negated = api(server, f"/api/patch/{rows[0]['id']}")["segments"]
    assert [s["negated"] for s in negated if s["text"] == "snow"] == [True]
    xss = api(server, f"/api/patch/{rows[2]['id']}")
    assert xss["caption"].startswith(XSS_SCRIPT) and XSS_IMG in xss["caption"]


def test_images_are_pngs_of_the_store(server: ReviewServer, run_dir: Path) -> None:
    pid = api(server, "/api/patches")["patches"][0]["id"]
    g = open_group(str(run_dir / "dataset.zarr"))
    pos = [str(i) for i in np.asarray(array(g, "patch_id")[:])].index(pid)
    labels = np.asarray(array(g, "land_cover")[pos])
    for kind in ("rgb", "land-cover"):
        status, headers, png = fetch(
            f"{server.base}/img/{pid}/{kind}.png", {"X-Review-Token": server.token}
        )
        assert status == 200 and headers["content-type"] == "image/png"
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img = Image.open(io.BytesIO(png))
        assert img.size == (256, 256)
        if kind == "land-cover":
            assert (np.asarray(img.convert("RGB")) == palette_rgb()[labels]).all()
        else:
            rgb = np.asarray(img)
            assert rgb.shape == (256, 256, 3) and rgb.min() == 0 and rgb.max() == 255  # stretch
    status, _, body = fetch(f"{server.base}/img/nope/rgb.png", {"X-Review-Token": server.token})
    assert status == 404 and b"'nope'" in body


def test_decisions_edits_and_refusals(server: ReviewServer, run_dir: Path) -> None:
    rows = api(server, "/api/patches")["patches"]
    p = rows[2]
    edit = {"patch_id": p["id"], "key": p["key"], "decision": "edit", "text": "Grass " + XSS_IMG}
    out = api(server, "/api/decision", edit)
    assert out["decision"]["text"] == "Grass " + XSS_IMG
    assert [s["cls"] for s in out["edited_segments"] if s["text"] == "Grass"] == [5]
    d = api(server, f"/api/patch/{p['id']}")
    assert d["decision"]["decision"] == "edit" and len(d["history"]) == 1 and not d["stale"]
    assert api(server, "/api/patches")["patches"][2]["decision"] == "edit"
    h = {"X-Review-Token": server.token}
    url = server.base + "/api/decision"
    status, _, body = fetch(url, h, {**edit, "key": "key-old"})
    assert status == 409 and b"reload the page" in body and p["id"].encode() in body
    status, _, body = fetch(url, h, {**edit, "text": "  "})
    assert status == 400 and b"non-empty" in body
    assert fetch(url, h, {**edit, "decision": "maybe"})[0] == 400
    assert fetch(url, h, {**edit, "patch_id": "nope"})[0] == 404
    status, _, body = fetch(url, h, None)
    assert status in (400, 405)
    assert len(read_decisions(run_dir)) == 1
