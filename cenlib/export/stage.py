"""The export stage: a run's dataset in ChatEarthNet's layout and the formats trainers read.

``run_export`` takes the captions that passed verification or were repaired (``export.include``),
or were accepted or edited in review (the latest decision on the caption's own key wins; a
rejected one stays out), deals the patches to spatially disjoint splits (:mod:`.splits`) and
writes, under ``export.output`` (a directory or an fsspec URL; default
``<output>/export/chatearthnet/``):

- ``images/<group>/<patch>.png``: 8-bit RGB (B04, B03, B02) and, when the store has the bands,
  the false-colour groups ChatEarthNet shipped (B05/B06/B07, B08/B11/B12), stretched as
  :mod:`.images` says; ``images/label/<patch>.png``: the land-cover map in ChatEarthNet's
  palette (class index as pixel value);
- ``captions/<model>_<split>.json``: per caption model and split, a JSON list of
  ``{"image": "images/rgb/<patch>.png", "caption": "..."}``, as ChatEarthNet's files are;
- ``llava_<split>.json``: LLaVA-style conversations;
- ``parquet/<split>-NNNNN.parquet`` (:mod:`.parquet`), ``webdataset/<split>-NNNNNN.tar``
  (:mod:`.shards`), ``geotiff/<patch>.tif`` and ``<patch>_label.tif`` (:mod:`.geotiff`),
  ``stac/collection.json`` and ``stac/items/<patch>.json`` (:mod:`.stac`), ``croissant.json``
  (:mod:`.croissant`), as ``export.formats`` lists;
- ``splits.json`` (patch -> split), ``stretch.json`` (band -> the values at 0 and 255) and
  ``README.md``, the dataset card (:mod:`.card`), its figures read from the files above.

Per-patch files are written by Dask tasks of ``export.batch`` patches of one split
(``export-<split>-NNNNN-token``, in ``span("export")``, :mod:`.batch`), each reading only its
patches' rows of the store; the driver writes the files that list every patch.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from distributed import Client, span

from cenlib.captions import read_captions
from cenlib.config import RunConfig
from cenlib.errors import CenError
from cenlib.export.batch import Item, Options, Written, batches, export_batch
from cenlib.export.card import (
    CITATION,
    DESCRIPTION,
    LICENSE_URL,
    dataset_card,
    extent_of,
    interval_of,
    read_table_at,
)
from cenlib.export.croissant import croissant
from cenlib.export.images import groups_of, measure_stretch
from cenlib.export.read import LAYOUT
from cenlib.export.record import IMAGE
from cenlib.export.sink import Sink
from cenlib.export.splits import SPLITS, assign_splits
from cenlib.export.stac import stac_collection
from cenlib.grid import grid_for
from cenlib.ingest import array, open_group, store_url
from cenlib.io import stable_hash
from cenlib.review import read_decisions
from cenlib.summary import Summary
from cenlib.verify import read_verdicts

PROMPT = (
    "<image>\nDescribe this satellite image: its land cover, where each kind lies, and how much."
)
OWNED = ("images", "geotiff", "stac", "webdataset", "parquet", "captions")  # cleared first


def _json(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True) + "\n").encode()


def caption_files(items: Sequence[Item], formats: Sequence[str]) -> dict[str, bytes]:
    """ChatEarthNet's ``captions/<model>_<split>.json`` and ``llava_<split>.json`` (the
    conversations LLaVA- and GeoChat-style fine-tuning reads), as file name -> bytes."""
    order = sorted(items, key=lambda i: i.patch_id)
    out: dict[str, bytes] = {}
    if "chatearthnet" in formats:
        by: dict[str, list[dict[str, str]]] = {}
        for i in order:
            rec = {"image": IMAGE.format(group="rgb", patch=i.patch_id), "caption": i.caption}
            by.setdefault(f"captions/{_slug(i.model)}_{i.split}.json", []).append(rec)
        out.update({name: _json(recs) for name, recs in sorted(by.items())})
    if "llava" in formats:
        for name in SPLITS:
            convs = [
                {
                    "id": i.patch_id,
                    "image": IMAGE.format(group="rgb", patch=i.patch_id),
                    "conversations": [
                        {"from": "human", "value": PROMPT},
                        {"from": "gpt", "value": i.caption},
                    ],
                }
                for i in order
                if i.split == name
            ]
            out[f"llava_{name}.json"] = _json(convs)
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
    formats: list[str]
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "model"


Chosen = tuple[str, str, dict[str, Any]]  # patch id, caption, provenance (Item's fields)


def _select(cfg: RunConfig) -> tuple[list[Chosen], Counter[str]]:
    """What goes in, and the reasons the rest stays out."""
    out = cfg.output
    decisions = read_decisions(out)
    first = {c.patch_id: c for c in read_captions(out)}
    keep: list[Chosen] = []
    left: Counter[str] = Counter()
    include = set(cfg.export.include)
    for v in read_verdicts(out):
        d = decisions.get(v.patch_id)
        c = first.get(v.patch_id)
        prov = {
            "model": c.model if c else "unknown",
            "endpoint": c.endpoint if c else "",
            "style": v.style,
            "key": v.key,
            "status": v.status,
            "round": v.round,
        }
        if d is not None and d.key == v.key:
            if d.decision == "reject" and "rejected" not in include:
                left["rejected in review"] += 1
                continue
            text = d.text if d.decision == "edit" and d.text else v.caption
            keep.append((v.patch_id, text, {**prov, "decision": d.decision}))
        elif v.status in include:
            keep.append((v.patch_id, v.caption, prov))
        else:
            left[f"{v.status} verification"] += 1
    return keep, left


def _stretch(g: Any, cfg: RunConfig, bands: list[str]) -> dict[str, Any]:
    """The per-band stretch, measured on ``export.stretch_sample`` patches spread over the store."""
    status = np.asarray(array(g, "status")[:])
    ok = np.flatnonzero(status == "ok")
    if not len(ok):
        return {}
    sample = ok[np.linspace(0, len(ok) - 1, min(cfg.export.stretch_sample, len(ok))).astype(int)]
    refl = np.stack([np.asarray(array(g, "reflectance")[int(i)]) for i in sample])
    return measure_stretch(refl, bands, cfg.export.percentiles)


def _collection(
    cfg: RunConfig, items: Sequence[Item], written: Sequence[Written], sink: Sink
) -> dict[str, Any]:
    table = read_table_at(sink)
    coll: dict[str, Any] = stac_collection(
        title=f"ChatEarthNet-style image-text dataset: {cfg.name}",
        description=DESCRIPTION,
        bbox=extent_of(table),
        interval=interval_of(table),
        item_hrefs=[f"./items/{h.rsplit('/', 1)[-1]}" for w in written for h in w.items],
        splits=dict(Counter(i.split for i in items)),
    )
    return coll


def _croissant(cfg: RunConfig, sink: Sink) -> dict[str, Any]:
    meta: dict[str, Any] = croissant(
        name=cfg.name,
        description=DESCRIPTION,
        url=sink.href(""),
        version="1.0.0",
        license=LICENSE_URL,
        citation=CITATION,
        date_published=time.strftime("%Y-%m-%d"),
        parquet_files=list(sink.glob("parquet/*.parquet")),
        images=cfg.export.parquet_images,
        splits=list(SPLITS),
    )
    return meta


def export_url(cfg: RunConfig) -> str:
    """Where the run's export goes: ``export.output`` or ``<output>/export/chatearthnet``."""
    return cfg.export.output or str(cfg.output / LAYOUT)


def _clear(sink: Sink) -> None:
    """Drop what an earlier export of this run left (parts of other sizes, dropped patches)."""
    for name in OWNED:
        if sink.fs.exists(sink.path(name)):
            sink.fs.rm(sink.path(name), recursive=True)


def run_export(cfg: RunConfig, client: Client) -> ExportSummary:
    """Export the run's dataset (see the module doc)."""
    t0 = time.perf_counter()
    keep, left = _select(cfg)
    if not keep:  # an empty dataset helps no one: say why and what would let captions in
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(left.items())) or "no verdicts"
        raise ExportError(
            f"no caption to export from {cfg.output} ({why}); look at verify.parquet and "
            "verify_report.json, review the captions (`cen review RUN_DIR`), or widen "
            f"export.include (now {list(cfg.export.include)})"
        )
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
    bands = [str(b) for b in np.asarray(array(g, "band")[:])]
    groups = groups_of(bands)
    if "rgb" not in groups:
        raise ExportError(
            f"the store {url} has bands {bands}, not red, green and blue: add them to "
            "ingest.bands (ChatEarthNet's images are RGB) and ingest again"
        )
    grid = grid_for(cfg.grid)
    strata = None
    if cfg.export.stratify and keep:
        rc = np.asarray(array(g, "region_counts")[:, 0])  # (n, classes); region 0: whole
        strata = {pid: int(np.argmax(rc[where[pid], 1:])) + 1 for pid, *_ in keep}
    split = assign_splits(
        [grid.key(pid) for pid, *_ in keep],
        cfg.export.ratios,
        seed=cfg.export.seed,
        block_zoom=cfg.export.block_zoom,
        utm_block=cfg.export.utm_block,
        strata=strata,
    )
    items = [Item(pid, where[pid], text, split=split[pid], **prov) for pid, text, prov in keep]
    stretch = _stretch(g, cfg, bands)
    attrs: dict[str, Any] = dict(g.attrs)
    sources = {
        name: (str(src.get("api", "")), str(src.get("collection", "")))
        for name, src in dict(attrs.get("sources", {})).items()
    }
    sink = Sink(export_url(cfg))
    _clear(sink)
    made = {"chatearthnet": "captions", "geotiff": "geotiff", "stac": "stac/items"}
    made |= {"parquet": "parquet", "webdataset": "webdataset"}
    for d in [
        *(f"images/{n}" for n in [*groups, "label"]),
        *(made[f] for f in made if f in cfg.export.formats),
    ]:
        sink.makedirs(d)
    opts = Options(
        tuple(cfg.export.formats),
        cfg.export.parquet_images,
        stretch,
        cfg.grid,
        sources,
        cfg.export.png_compression,
    )
    todo = batches(items, cfg.export.batch, SPLITS)
    token = stable_hash([(b.split, b.part, [i.patch_id for i in b.items]) for b in todo], opts)
    with span("export"):
        futures = [
            client.submit(
                export_batch,
                url,
                sink.url,
                b,
                opts,
                key=f"export-{b.split}-{b.part:05d}-{token[:8]}",
            )
            for b in todo
        ]
        written = [f.result() for f in futures]
    files = sum(w.files for w in written)
    size = sum(w.bytes for w in written)
    small = caption_files(items, cfg.export.formats)
    small["splits.json"] = _json(split)
    small["stretch.json"] = _json(stretch)
    if "stac" in cfg.export.formats:
        small["stac/collection.json"] = _json(_collection(cfg, items, written, sink))
    if "croissant" in cfg.export.formats:
        small["croissant.json"] = _json(_croissant(cfg, sink))
    for name, data in small.items():
        size += sink.write(name, data)
        files += 1
    card = dataset_card(sink, cfg, attrs)
    size += sink.write("README.md", card.encode())
    counts = Counter(i.split for i in items)
    return ExportSummary(
        exported=len(items),
        excluded=dict(left),
        splits={s: counts[s] for s in SPLITS},
        groups=groups,
        formats=list(cfg.export.formats),
        files=files + 1,
        bytes=size,
        directory=sink.href("").rstrip("/"),
        seconds=round(time.perf_counter() - t0, 2),
    )
