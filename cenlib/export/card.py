"""The dataset card (``README.md`` of the export), its figures read from the exported files.

Every number in the card is computed here from the Parquet parts and the file listing of the
export (never from the run's in-memory state), so the card describes what was written. Its YAML
front matter is a Hugging Face dataset card's: ``datasets.load_dataset(<export dir>)`` finds the
Parquet parts of each split from it. Provenance that is not in the rows (the STAC APIs, software
versions, the config hash) comes from the ingest store's attributes.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from importlib import metadata
from typing import Any

import numpy as np

from cenlib.classes import CLASS_NAMES
from cenlib.config import RunConfig
from cenlib.export.sink import Sink
from cenlib.export.splits import SPLITS

DESCRIPTION = (
    "Sentinel-2 L2A image patches paired with land-cover captions written by a language model "
    "from ESA WorldCover statistics, checked against the land cover they describe, after "
    "ChatEarthNet (Yuan et al., ESSD 2025). Contains modified Copernicus Sentinel data; "
    "ESA WorldCover 2021 (CC BY 4.0)."
)
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
CITATION = (
    "Yuan, Z., Xiong, Z., Mou, L., and Zhu, X. X.: ChatEarthNet: a global-scale image-text "
    "dataset empowering vision-language geo-foundation models, Earth Syst. Sci. Data, 2025."
)
ATTRIBUTION = (
    "Contains modified Copernicus Sentinel data (Sentinel-2 L2A), processed by this export. "
    "Land cover: ESA WorldCover 10 m 2021 v200, © ESA WorldCover project 2021 / Contains "
    "modified Copernicus Sentinel data (2021) processed by ESA WorldCover consortium, "
    "licensed CC BY 4.0."
)
VERSIONS = ("cenlib", "dask", "distributed", "zarr", "xarray", "rioxarray", "numpy", "pyarrow")


def read_table_at(sink: Sink) -> Any:
    """The exported rows (without image bytes) as a pandas DataFrame, sorted by patch id."""
    import pandas as pd
    import pyarrow.parquet as pq

    parts = list(sink.glob("parquet/*.parquet"))
    if not parts:
        return pd.DataFrame({"patch_id": [], "split": []})
    tables = []
    for rel in parts:
        with sink.fs.open(sink.path(rel), "rb") as f:
            names = [n for n in pq.read_schema(f).names if n not in ("image_png", "label_png")]
            f.seek(0)
            tables.append(pq.read_table(f, columns=names).to_pandas())
    return pd.concat(tables, ignore_index=True).sort_values("patch_id", ignore_index=True)


def extent_of(table: Any) -> list[float]:
    """[west, south, east, north] of the rows' bounding boxes (the whole globe if none)."""
    if not len(table):
        return [-180.0, -90.0, 180.0, 90.0]
    b = np.stack(table["bbox"].to_numpy())
    return [float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())]


def interval_of(table: Any) -> tuple[str | None, str | None]:
    """First and last acquisition (ISO 8601), or (None, None)."""
    if not len(table):
        return None, None
    times = sorted(table["datetime"])
    return str(times[0]), str(times[-1])


def figures(table: Any) -> dict[str, Any]:
    """The card's figures, from the exported rows (the test recomputes them the same way)."""
    fr = [json.loads(s) for s in table["class_fractions"]] if len(table) else []
    share = {c: float(np.mean([f.get(c, 0.0) for f in fr])) if fr else 0.0 for c in CLASS_NAMES}
    present = {c: sum(1 for f in fr if f.get(c, 0.0) > 0) for c in CLASS_NAMES}
    words = [len(str(c).split()) for c in table["caption"]] if len(table) else [0]
    return {
        "patches": len(table),
        "splits": {s: int((table["split"] == s).sum()) for s in SPLITS},
        "verification": dict(Counter(table["verification"])) if len(table) else {},
        "review": dict(Counter(r or "not reviewed" for r in table["review"])) if len(table) else {},
        "models": dict(Counter(table["model"])) if len(table) else {},
        "styles": dict(Counter(table["style"])) if len(table) else {},
        "sentinel2_items": sorted({i for ids in table.get("sentinel2_items", []) for i in ids}),
        "worldcover_items": sorted({i for ids in table.get("worldcover_items", []) for i in ids}),
        "class_share": share,
        "class_presence": present,
        "words": (int(np.min(words)), float(np.mean(words)), int(np.max(words))),
        "extent": extent_of(table),
        "interval": interval_of(table),
    }


def _rows(d: dict[str, Any]) -> str:
    return "\n".join(f"| {k} | {v} |" for k, v in d.items())


def _front_matter(sink: Sink, fig: dict[str, Any]) -> str:
    splits = [s for s in SPLITS if any(True for _ in sink.glob(f"parquet/{s}-*.parquet"))]
    files = "".join(f"  - split: {s}\n    path: parquet/{s}-*.parquet\n" for s in splits)
    return (
        "---\nlicense: cc-by-4.0\npretty_name: ChatEarthNet-style image-text dataset\n"
        "task_categories:\n- image-to-text\ntags:\n- remote-sensing\n- sentinel-2\n"
        f"- worldcover\nsize_categories:\n- n<{max(10 ** len(str(fig['patches'])), 10)}\n"
        + (f"configs:\n- config_name: default\n  data_files:\n{files}" if splits else "")
        + "---\n"
    )


def dataset_card(sink: Sink, cfg: RunConfig, attrs: dict[str, Any]) -> str:
    """The card's Markdown for the export at ``sink`` (its Parquet parts must be written)."""
    table = read_table_at(sink)
    fig = figures(table)
    w, s, e, n = fig["extent"]
    t0, t1 = fig["interval"]
    counts = Counter(rel.rsplit("/", 1)[0] for rel in sink.files() if "/" in rel)
    software = {**dict(attrs.get("software", {}))}
    for pkg in VERSIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            software.setdefault(pkg, metadata.version(pkg))
    sources = dict(attrs.get("sources", {}))
    src = "\n".join(
        f"| {k} | {v.get('api', '')} | {v.get('collection', '')} |" for k, v in sources.items()
    )
    lo, mean, hi = fig["words"]
    classes = "\n".join(
        f"| {c} | {100 * fig['class_share'][c]:.2f} % | {fig['class_presence'][c]} |"
        for c in CLASS_NAMES
    )
    s2, wc = fig["sentinel2_items"], fig["worldcover_items"]
    return f"""{_front_matter(sink, fig)}
# {cfg.name}: a ChatEarthNet-style image-text dataset

{DESCRIPTION}

## What

{fig["patches"]} Sentinel-2 L2A patches of {cfg.grid.patch_size} x {cfg.grid.patch_size} pixels
on the `{cfg.grid.kind}` grid, each with a land-cover map (ChatEarthNet's 12 classes from ESA
WorldCover) and one caption. Captions are {lo} to {hi} words long ({mean:.1f} on average).

## How many

| split | patches |
|---|---|
{_rows(fig["splits"])}

Splits are spatially disjoint (every patch of a block in one split; seed {cfg.export.seed},
ratios {list(cfg.export.ratios)}).

## Where and when

Extent (lon/lat): west {w:.4f}, south {s:.4f}, east {e:.4f}, north {n:.4f}.
Acquisitions from {t0} to {t1}.

## Sources

| source | STAC API | collection |
|---|---|---|
{src}

{len(s2)} Sentinel-2 items and {len(wc)} WorldCover items were read:

<details><summary>item ids</summary>

Sentinel-2: {", ".join(s2)}

WorldCover: {", ".join(wc)}

</details>

## Captions

| model | patches |
|---|---|
{_rows(fig["models"])}

| prompt style | patches |
|---|---|
{_rows(fig["styles"])}

| verification | patches |
|---|---|
{_rows(fig["verification"])}

| review | patches |
|---|---|
{_rows(fig["review"])}

## Land cover

| class | mean pixel share | patches where present |
|---|---|---|
{classes}

## Files

| directory | files |
|---|---|
{_rows(dict(sorted(counts.items())))}

## Software

Config hash `{attrs.get("config_hash", "unknown")}`.

| package | version |
|---|---|
{_rows(dict(sorted(software.items())))}

## Licence and attribution

CC BY 4.0. {ATTRIBUTION}

Cite: {CITATION}
"""
