"""The export stage, ChatEarthNet's layout (the other formats and the card are still to come).

``run_export`` takes the captions that passed verification or were repaired (``export.include``),
or were accepted or edited in review (the latest decision on the caption's own key wins; a
rejected one stays out), deals the patches to spatially disjoint splits (:mod:`.splits`) and
writes ``<output>/export/chatearthnet/``:

- ``images/<group>/<patch>.png``: 8-bit RGB (B04, B03, B02) and, when the store has the bands,
  the false-colour groups ChatEarthNet shipped (B05/B06/B07, B08/B11/B12), stretched as
  :mod:`.images` says; ``images/label/<patch>.png``: the land-cover map in ChatEarthNet's
  palette (class index as pixel value);
- ``captions/<model>_<split>.json``: per caption model and split, a JSON list of
  ``{"image": "images/rgb/<patch>.png", "caption": "..."}``, as ChatEarthNet's files are;
- ``splits.json`` (patch -> split) and ``stretch.json`` (band -> the values at 0 and 255).

Images are written by Dask tasks of ``export.batch`` patches (``export-NNNNN-token``, in
``span("export")``), each reading only its patches' rows of the store.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, span

from cenlib.captions import read_captions
from cenlib.config import RunConfig
from cenlib.errors import CenError
from cenlib.export.images import GROUPS, groups_of, label_png, measure_stretch, png, to_8bit
from cenlib.export.splits import SPLITS, assign_splits
from cenlib.grid import grid_for
from cenlib.ingest import array, open_group, store_url
from cenlib.io import stable_hash, write_atomic
from cenlib.review import read_decisions
from cenlib.summary import Summary
from cenlib.verify import read_verdicts

LAYOUT = Path("export") / "chatearthnet"
PROMPT = (
    "<image>\nDescribe this satellite image: its land cover, where each kind lies, and how much."
)


def tables(items: Sequence[_Item], g: Any, grid: Any) -> dict[str, bytes]:
    """``dataset.parquet`` (one row per patch with its provenance) and ``llava_<split>.json``
    (the conversations LLaVA- and GeoChat-style fine-tuning reads), as file name -> bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    order = sorted(items, key=lambda i: i.patch_id)
    rows = [i.index for i in order]
    col = {n: np.asarray(array(g, n)[:]) for n in ("datetime", "s2_items", "wc_items")}
    table = pa.table(
        {
            "patch_id": [i.patch_id for i in order],
            "split": [i.split for i in order],
            "image": [f"images/rgb/{i.patch_id}.png" for i in order],
            "label_image": [f"images/label/{i.patch_id}.png" for i in order],
            "caption": [i.caption for i in order],
            "model": [i.model for i in order],
            "style": [i.style for i in order],
            "request_key": [i.key for i in order],
            "verification": [i.status for i in order],
            "repair_round": pa.array([i.round for i in order], pa.int32()),
            "review": [i.decision for i in order],
            "datetime": [str(np.datetime_as_string(col["datetime"][r], unit="s")) for r in rows],
            "sentinel2_item": [str(col["s2_items"][r]) for r in rows],
            "worldcover_item": [str(col["wc_items"][r]) for r in rows],
            "grid": [grid.kind for _ in order],
            "footprint_wkt": [grid.key(i.patch_id).lonlat_polygon().wkt for i in order],
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    out = {"dataset.parquet": sink.getvalue().to_pybytes()}
    for name in SPLITS:
        convs = [
            {
                "id": i.patch_id,
                "image": f"images/rgb/{i.patch_id}.png",
                "conversations": [
                    {"from": "human", "value": PROMPT},
                    {"from": "gpt", "value": i.caption},
                ],
            }
            for i in order
            if i.split == name
        ]
        out[f"llava_{name}.json"] = (
            json.dumps(convs, indent=1, ensure_ascii=False) + "\n"
        ).encode()
    return out


class ExportError(CenError, RuntimeError):
    """The export stage cannot start; the message says what to fix."""


@dataclass(frozen=True)
class ExportSummary(Summary):
    """What an export wrote."""

    exported: int
    excluded: dict[str, int]  # reason -> patches left out
    splits: dict[str, int]
    groups: list[str]  # image groups written besides the label map
    files: int
    bytes: int
    directory: str
    seconds: float

    def line(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        out = sum(self.excluded.values())
        return (
            f"export: {self.exported} patches ({per}); {out} left out; "
            f"{self.files} files -> {self.directory}"
        )


@dataclass(frozen=True)
class _Item:
    patch_id: str
    index: int  # store row
    caption: str
    model: str
    split: str
    style: str = ""
    key: str = ""
    status: str = ""  # verification: pass, repaired, failed
    decision: str | None = None  # review: accept, edit, reject, or None
    round: int = 0  # repair round of the caption


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "model"


def _write(path: Path, data: bytes) -> int:
    """Write by rename (a reader never sees part of a file); no fsync per image: a crashed run
    is exported again."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def export_batch(
    url: str, root: str, items: Sequence[tuple[str, int]], stretch: dict[str, Any]
) -> tuple[int, int]:
    """Write the images of ``items`` (patch id, store row): a Dask task. Returns (files, bytes)."""
    g = open_group(url)
    bands = [str(b) for b in np.asarray(array(g, "band")[:])]
    refl_a, lc_a = array(g, "reflectance"), array(g, "land_cover")
    groups = groups_of(bands)
    files = size = 0
    for pid, i in items:
        refl = np.asarray(refl_a[i])
        for name in groups:
            size += _write(
                Path(root, "images", name, f"{pid}.png"),
                png(to_8bit(refl, bands, GROUPS[name], stretch)),
            )
            files += 1
        size += _write(Path(root, "images", "label", f"{pid}.png"), label_png(np.asarray(lc_a[i])))
        files += 1
    return files, size


Chosen = tuple[str, str, str, dict[str, Any]]  # patch id, caption, model, provenance


def _select(cfg: RunConfig) -> tuple[list[Chosen], Counter[str]]:
    """What goes in, and the reasons the rest stays out."""
    out = cfg.output
    decisions = read_decisions(out)
    models = {c.patch_id: c.model for c in read_captions(out)}
    keep: list[Chosen] = []
    left: Counter[str] = Counter()
    include = set(cfg.export.include)
    for v in read_verdicts(out):
        d = decisions.get(v.patch_id)
        model = models.get(v.patch_id, "unknown")
        prov = {"style": v.style, "key": v.key, "status": v.status, "round": v.round}
        if d is not None and d.key == v.key:
            if d.decision == "reject" and "rejected" not in include:
                left["rejected in review"] += 1
                continue
            text = d.text if d.decision == "edit" and d.text else v.caption
            keep.append((v.patch_id, text, model, {**prov, "decision": d.decision}))
        elif v.status in include:
            keep.append((v.patch_id, v.caption, model, prov))
        else:
            left[f"{v.status} verification"] += 1
    return keep, left


def run_export(cfg: RunConfig, client: Client) -> ExportSummary:
    """Export the run's dataset in ChatEarthNet's layout (see the module doc)."""
    t0 = time.perf_counter()
    root = cfg.output / LAYOUT
    keep, left = _select(cfg)
    url = store_url(cfg)
    g = open_group(url)
    ids = [str(x) for x in np.asarray(array(g, "patch_id")[:])]
    where = {pid: i for i, pid in enumerate(ids)}
    missing = [pid for pid, *_ in keep if pid not in where]
    if missing:
        raise ExportError(
            f"patches {missing[:5]} have captions but are not in the store {url}; "
            "run `cen ingest CONFIG` again or remove their captions"
        )
    grid = grid_for(cfg.grid)
    keys = [grid.key(pid) for pid, *_ in keep]
    strata = None
    if cfg.export.stratify and keep:
        rc = np.asarray(array(g, "region_counts")[:])  # (n, regions, classes); region 0: whole
        strata = {pid: int(np.argmax(rc[where[pid], 0, 1:])) + 1 for pid, *_ in keep}
    split = assign_splits(
        keys,
        cfg.export.ratios,
        seed=cfg.export.seed,
        block_zoom=cfg.export.block_zoom,
        utm_block=cfg.export.utm_block,
        strata=strata,
    )
    items = [
        _Item(pid, where[pid], text, model, split[pid], **prov) for pid, text, model, prov in keep
    ]
    bands = [str(b) for b in np.asarray(array(g, "band")[:])]
    status = np.asarray(array(g, "status")[:])
    ok = np.flatnonzero(status == "ok")
    sample = ok[np.linspace(0, len(ok) - 1, min(cfg.export.stretch_sample, len(ok))).astype(int)]
    stretch = {}
    if len(ok):
        refl = np.stack([np.asarray(array(g, "reflectance")[int(i)]) for i in sample])
        stretch = measure_stretch(refl, bands, cfg.export.percentiles)
    groups = groups_of(bands)
    if "rgb" not in groups:
        raise ExportError(
            f"the store {url} has bands {bands}, not red, green and blue: add them to "
            "ingest.bands (ChatEarthNet's images are RGB) and ingest again"
        )
    for name in [*groups, "label"]:
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
    token = stable_hash([(i.patch_id, i.index) for i in items], stretch)[:8]
    step = cfg.export.batch
    with span("export"):
        futures = [
            client.submit(
                export_batch,
                url,
                str(root),
                [(i.patch_id, i.index) for i in items[s : s + step]],
                stretch,
                key=f"export-{k:05d}-{token}",
            )
            for k, s in enumerate(range(0, len(items), step))
        ]
        written = [f.result() for f in futures]
    files = sum(w[0] for w in written)
    size = sum(w[1] for w in written)
    (root / "captions").mkdir(parents=True, exist_ok=True)
    by: dict[tuple[str, str], list[dict[str, str]]] = {}
    for i in sorted(items, key=lambda i: i.patch_id):
        rec = {"image": f"images/rgb/{i.patch_id}.png", "caption": i.caption}
        by.setdefault((_slug(i.model), i.split), []).append(rec)
    for (model, name), recs in sorted(by.items()):
        data = (json.dumps(recs, indent=1, ensure_ascii=False) + "\n").encode()
        write_atomic(root / "captions" / f"{model}_{name}.json", data)
        files += 1
        size += len(data)
    for name, data in tables(items, g, grid).items():
        write_atomic(root / name, data)
        files += 1
        size += len(data)
    for name, obj in (("splits.json", split), ("stretch.json", stretch)):
        data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
        write_atomic(root / name, data)
        files += 1
        size += len(data)
    counts = Counter(i.split for i in items)
    return ExportSummary(
        exported=len(items),
        excluded=dict(left),
        splits={s: counts[s] for s in SPLITS},
        groups=groups,
        files=files,
        bytes=size,
        directory=str(root),
        seconds=round(time.perf_counter() - t0, 2),
    )
