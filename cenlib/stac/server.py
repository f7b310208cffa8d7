"""A real STAC API on loopback: ``rustac serve`` (in-memory backend) run as a child process.

Before loading, every asset href becomes an absolute ``file://`` URI: a STAC API would resolve a
relative href against its own URL, which points nowhere.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cenlib.errors import CenError
from cenlib.world.build import CATALOGS, read_manifest

Json = dict[str, Any]


class StacServerError(CenError, RuntimeError):
    """The local STAC API could not be started or loaded."""


def _is_relative(href: str) -> bool:
    return "://" not in href and not href.startswith("/")


def absolutize(item: Json, source: Path) -> Json:
    """A copy of `item` whose relative asset hrefs are absolute file:// URIs (links dropped)."""
    out = dict(item)
    out["assets"] = {}
    for key, asset in item.get("assets", {}).items():
        a = dict(asset)
        href = str(a["href"])
        if _is_relative(href):
            a["href"] = (source.parent / href).resolve().as_uri()
        elif href.startswith("/"):
            a["href"] = Path(href).as_uri()
        out["assets"][key] = a
    # Relative links (collection, parent) would be resolved against the server; it adds its own.
    out["links"] = [ln for ln in item.get("links", []) if not _is_relative(str(ln.get("href", "")))]
    return out


def collect(paths: Sequence[Path]) -> tuple[dict[str, Json], dict[str | None, list[Json]]]:
    """Collections and items (grouped by collection) in the JSON files under `paths`."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.rglob("*.json")))
        elif p.is_file():
            files.append(p)
        else:
            raise StacServerError(f"{p}: no such file or directory to serve")
    collections: dict[str, Json] = {}
    items: dict[str | None, list[Json]] = defaultdict(list)
    for f in files:
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StacServerError(f"{f}: not valid JSON ({e}); fix or remove the file") from e
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind == "Collection":
            collections[doc["id"]] = {**doc, "links": []}
        elif kind == "Feature":
            items[doc.get("collection")].append(absolutize(doc, f))
        elif kind == "FeatureCollection":
            for it in doc.get("features", []):
                items[it.get("collection")].append(absolutize(it, f))
    if not collections and not items:
        raise StacServerError(f"no STAC collections or items found in {', '.join(map(str, paths))}")
    return collections, items


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def rustac_executable() -> str:
    """The ``rustac`` command installed beside this Python (the PyPI package ships it)."""
    beside = Path(sys.executable).parent / "rustac"
    found = str(beside) if beside.exists() else shutil.which("rustac")
    if not found:
        raise StacServerError("rustac is not installed; run `make` setup (pip install rustac)")
    return found


def _get(url: str, timeout: float = 2.0) -> Json:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        data: Json = json.loads(r.read())
        return data


@contextlib.contextmanager
def serve(
    paths: Sequence[Path],
    port: int | None = None,
    host: str = "127.0.0.1",
    timeout: float = 60.0,
    transform: Callable[[Json], Json] | None = None,
) -> Iterator[str]:
    """Serve the STAC JSON under `paths` as an API on loopback; yield its root URL.

    ``transform`` rewrites each item before it is loaded (e.g. its asset hrefs to an HTTP file
    server's). The server always stops when the block exits, even on error.
    """
    collections, items = collect([Path(p) for p in paths])
    if transform is not None:
        items = {c: [transform(it) for it in its] for c, its in items.items()}
    with tempfile.TemporaryDirectory(prefix="cen-stac-") as tmp:
        load: list[str] = []
        for cid, coll in sorted(collections.items()):
            f = Path(tmp) / f"collection-{cid}.json"
            f.write_text(json.dumps(coll))
            load.append(str(f))
        for i, (_cid, its) in enumerate(sorted(items.items(), key=lambda kv: str(kv[0]))):
            f = Path(tmp) / f"items-{i}.json"
            f.write_text(json.dumps({"type": "FeatureCollection", "features": its}))
            load.append(str(f))
        port = port or free_port(host)
        cmd = [rustac_executable(), "serve", "--addr", f"{host}:{port}", *load]
        if None in items or any(c not in collections for c in items):
            cmd.insert(2, "--create-collections")
        log = open(Path(tmp) / "server.log", "w+b")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"}
        )
        url = f"http://{host}:{port}"
        try:
            _wait_ready(proc, url, len(set(collections) | {c for c in items if c}), timeout, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, n_collections: int, timeout: float, log: Any
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise StacServerError(
                f"rustac serve exited with code {proc.returncode}: "
                + log.read().decode(errors="replace")[-2000:]
            )
        try:
            if len(_get(url + "/collections").get("collections", [])) >= n_collections:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    raise StacServerError(f"STAC API at {url} did not answer within {timeout:.0f} s")


def world_catalogs(world: Path) -> dict[str, Path]:
    """The catalogue folders of a synthetic world, by name (earth-search, planetary-computer)."""
    if read_manifest(world) is None:
        raise StacServerError(
            f"{world}: not a synthetic world (no world.json); build one with `cen world build`"
        )
    return {name: world / "stac" / name for name in CATALOGS}


@contextlib.contextmanager
def serve_world(
    world: Path,
    host: str = "127.0.0.1",
    files_url: str | None = None,
    sign: Callable[[str], str] | None = None,
) -> Iterator[dict[str, str]]:
    """Serve each catalogue of a world as its own API (they share collection ids, as in reality).

    With ``files_url`` (the root URL of an HTTP server of the world's directory, such as
    :func:`cenlib.stac.files.serve_files`), the items' assets point at it instead of the files,
    as a cloud catalogue's point at its object store; ``sign`` (such as that server's
    ``FileServer.sign``) then signs each href as the items are loaded, as a catalogue that hands
    out signed hrefs does (they expire while the API serves them).
    """
    transform = None
    if files_url is not None:
        from cenlib.stac.files import rehref

        root = Path(world).resolve()
        transform = functools.partial(rehref, base_url=files_url, root=root, sign=sign)
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(serve([path], host=host, transform=transform))
            for name, path in world_catalogs(world).items()
        }
