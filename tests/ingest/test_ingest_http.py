"""Ingest from COGs over HTTP (a real loopback file server behaving like an object store):
the same store as from local files, with injected faults too and with signed hrefs that expire
every 2 s, and a truncated COG is a named failure."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import xarray as xr
from distributed import Client

from cenlib.config import RunConfig, parse_config
from cenlib.grid import Grid
from cenlib.ingest.stage import ingest_patches
from cenlib.search import read_items, search_patches
from cenlib.stac.files import Faults, FileServer, ServeOptions, serve_files
from cenlib.stac.search import SearchRequest, search
from cenlib.stac.server import serve_world
from cenlib.stac.signatures import is_masked

DOLOMITES = (11.97, 46.56, 12.03, 46.61)
Items = list[dict[str, Any]]


def _items(apis: dict[str, str]) -> tuple[Items, Items]:
    cfg = RunConfig()
    s2 = search(SearchRequest(apis["earth-search"], "sentinel-2-l2a", DOLOMITES, cfg.time.interval))
    wc = search(SearchRequest(apis["planetary-computer"], "esa-worldcover", DOLOMITES))
    return [i.to_dict() for i in s2.items], [i.to_dict() for i in wc.items]


def _ingest(out: Path, apis: dict[str, str], client: Client) -> Path:
    return Path(_summary(out, apis, client)["store"])


def _summary(out: Path, apis: dict[str, str], client: Client) -> Any:
    s2, wc = _items(apis)
    cfg = parse_config({"output": str(out), "ingest": {"shard_patches": 8, "io_concurrency": 4}})
    return ingest_patches(cfg, list(Grid().covering(DOLOMITES)), s2, wc, apis, client)


@pytest.fixture(scope="module")
def local_store(
    tmp_path_factory: pytest.TempPathFactory, world_apis: dict[str, str], dask_client: Client
) -> Path:
    return _ingest(tmp_path_factory.mktemp("local") / "run", world_apis, dask_client)


@pytest.fixture
def served(demo_world: Path, request: pytest.FixtureRequest) -> Iterator[tuple[FileServer, Any]]:
    options = getattr(request, "param", ServeOptions())
    with serve_files(demo_world, options) as fs:
        # With tokens, the catalogue hands out hrefs signed as it loads them (they soon expire).
        sign = fs.sign if options.token_ttl is not None else None
        with serve_world(demo_world, files_url=fs.url, sign=sign) as apis:
            yield fs, apis


def _same_arrays(a: Path, b: Path) -> None:
    # All but the root zarr.json, whose provenance names the STAC API URLs each ingest was
    # given (two loopback servers here).
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.parent != a)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.parent != b)
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_over_http_the_same_store(
    served: tuple[FileServer, dict[str, str]],
    local_store: Path,
    dask_client: Client,
    tmp_path: Path,
) -> None:
    """Over HTTP a shard's patches are read 4 at a time (ingest.io_concurrency), from local
    files one after another: the same bytes."""
    fs, apis = served
    s2, _ = _items(apis)
    assert all(a["href"].startswith(fs.url) for it in s2 for a in it["assets"].values())
    _same_arrays(local_store, _ingest(tmp_path / "run", apis, dask_client))
    c = fs.counters
    assert c.partial > 0 and c.requests == c.partial + sum(r.method == "HEAD" for r in fs.log)


@pytest.mark.parametrize(
    "served", [ServeOptions(faults=Faults(error_rate=0.1, reset_rate=0.05, seed=3))], indirect=True
)
def test_injected_faults_are_retried_to_the_same_store(
    served: tuple[FileServer, dict[str, str]],
    local_store: Path,
    dask_client: Client,
    tmp_path: Path,
) -> None:
    fs, apis = served
    summary = _summary(tmp_path / "run", apis, dask_client)
    _same_arrays(local_store, Path(summary["store"]))
    faults = fs.counters.faults
    assert faults["error"] > 0 and faults["reset"] > 0, fs.counters  # injected, and survived
    # GDAL retries most of these itself (often all: then no retry is counted); what it gives up
    # on the Readers retry on a fresh handle (tests/ingest/test_read.py). Each retry answers at
    # least one injected fault, and unsigned hrefs are never re-signed.
    assert summary["retries"] <= faults["reset"] + faults["error"], (summary, faults)
    assert summary["resigns"] == 0


TTL = 2.0


@pytest.mark.parametrize("served", [ServeOptions(token_ttl=TTL)], indirect=True)
def test_expiring_signatures_are_re_signed_to_the_same_store(
    served: tuple[FileServer, dict[str, str]],
    local_store: Path,
    dask_client: Client,
    tmp_path: Path,
) -> None:
    """The items' hrefs carry tokens valid for 2 s from when the catalogue loaded them, all
    expired when ingest starts (and the fresh ones may expire again during the run; a token
    expiring between an open and its reads is tests/ingest/test_read.py's). The refused reads
    are re-signed through the store's token API and redone: the same store."""
    fs, apis = served
    s2, wc = _items(apis)
    hrefs = [a["href"] for it in s2 + wc for a in it["assets"].values()]
    assert hrefs and all(h.startswith(fs.url) and "token=" in h for h in hrefs)
    last = max(float(parse_qs(urlsplit(h).query)["exp"][0]) for h in hrefs)
    time.sleep(max(0.0, last - time.time() + 0.1))
    summary = _summary(tmp_path / "run", apis, dask_client)
    _same_arrays(local_store, Path(summary["store"]))  # no patch lost, no token in the store
    c = fs.counters
    # Each re-sign answers at least one refusal; none is counted as a retry.
    assert 0 < summary["resigns"] <= c.forbidden, (summary, c)
    assert summary["retries"] == 0, summary
    assert 0 < c.tokens <= summary["resigns"]  # tokens are shared by the hrefs of a container


@pytest.mark.parametrize("served", [ServeOptions(token_ttl=600)], indirect=True)
def test_stored_search_results_hold_no_token(
    served: tuple[FileServer, dict[str, str]],
    local_store: Path,
    dask_client: Client,
    tmp_path: Path,
) -> None:
    """The search stage writes the catalogue's signed hrefs with their signatures masked, and
    ingest from those stored items signs them afresh (before opening, not after a 403). The
    tokens last 10 minutes, so that none expires during the run however loaded the machine
    (a masked href opened unsigned would still be refused: its token is "redacted")."""
    fs, apis = served
    cfg = parse_config({"output": str(tmp_path / "run"), "ingest": {"shard_patches": 8}})
    keys = list(Grid().covering(DOLOMITES))
    urls = {"sentinel2": apis["earth-search"], "worldcover": apis["planetary-computer"]}
    search_patches(cfg, urls, keys, dask_client)
    stored = {s: read_items(cfg.output / "search", s) for s in ("sentinel2", "worldcover")}
    hrefs = [a["href"] for its in stored.values() for it in its for a in it["assets"].values()]
    assert hrefs and all(h.startswith(fs.url) and is_masked(h) for h in hrefs)
    text = "".join(p.read_text() for p in (cfg.output / "search").iterdir())
    values = re.findall(r"[?&](?:token|exp|sr)=([^&\"]*)", text)
    assert values and set(values) == {"redacted"}, "a signature reached the run directory"
    fs.log.clear()
    s = ingest_patches(cfg, keys, stored["sentinel2"], stored["worldcover"], urls, dask_client)
    _same_arrays(local_store, Path(s["store"]))
    assert s["resigns"] == 0 and fs.counters.forbidden == 0, (s, fs.counters)


def test_a_truncated_cog_is_a_named_failure(
    demo_world: Path, dask_client: Client, tmp_path: Path
) -> None:
    """Every WorldCover map cut at half its size (HEAD and ranges agree: a corrupt upload)."""
    with serve_files(demo_world) as probe, serve_world(demo_world, files_url=probe.url) as apis:
        _, wc = _items(apis)
    cut = {it["assets"]["map"]["href"].removeprefix(probe.url + "/") for it in wc}
    options = ServeOptions(truncate=frozenset(cut))
    with serve_files(demo_world, options) as fs, serve_world(demo_world, files_url=fs.url) as apis:
        store = _ingest(tmp_path / "run", apis, dask_client)
    ds = xr.open_zarr(store, consolidated=False)
    named = [json.loads(i) for i in ds.issues.values if i]
    assert named, "no patch names a truncated asset"
    for issues in named:
        for i in issues:
            assert i["asset"] == "map" and any(i["href"].endswith(c) for c in cut), i
            assert "read failed" in i["reason"] or "cannot open" in i["reason"], i
    assert set(ds.status.values) <= {"ok", "failed"}
