"""Helpers shared by several test modules (independent readers the code under test is checked
against). Importable as ``_support`` because pytest puts this folder, home of conftest.py, on the
path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from jsonschema import Draft7Validator
from rasterio.vrt import WarpedVRT
from rasterio.warp import Resampling

from cenlib.grid import PatchKey


def warped_read(href: str, key: PatchKey, resampling: Resampling) -> np.ndarray[Any, Any]:
    """An independent read of a patch window: GDAL's warped VRT onto the patch grid (nodata 0)."""
    g = key.geobox
    with (
        rasterio.open(href) as src,
        WarpedVRT(
            src,
            crs=str(g.crs),
            transform=g.affine,
            width=g.shape.x,
            height=g.shape.y,
            resampling=resampling,
            nodata=0,
        ) as vrt,
    ):
        out: np.ndarray[Any, Any] = vrt.read(1)
        return out


def stac_item_validator() -> Draft7Validator:
    """pystac's bundled STAC 1.1 core item schema, with its local $refs resolved offline."""
    from referencing import Registry, Resource

    root = Path(pystac.__file__).parent / "validation/jsonschemas"
    resources = []
    for p in root.rglob("*.json"):
        doc = json.loads(p.read_text())
        res = Resource.from_contents(doc)
        resources.append((str(doc.get("$id", "")).rstrip("#"), res))
        if "stac-spec" in p.parts:  # one bundled $id has a typo; register the file name too
            resources.append(
                (f"https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/{p.name}", res)
            )
    schema = json.loads((root / "stac-spec/v1.1.0/item.json").read_text())
    return Draft7Validator(schema, registry=Registry().with_resources(resources))


def cen_process(*args: str) -> subprocess.Popen[str]:
    """``cen ARGS`` in its own session (so that killing its group takes the cluster's workers
    too), output captured as text. SIGINT is reset to its default: a test run started in the
    background of a non-interactive shell inherits it ignored, and Ctrl-C would do nothing."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "cen"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
