"""Scene choice per patch and reading the chosen scene as reflectance.

A patch's candidates are its Sentinel-2 items grouped by acquisition day, so a patch that
straddles MGRS tiles (or UTM zones) gets one mosaic per day. Each day is scored by its SCL band
*over the patch*: cloud (medium, high), cloud shadow and thin cirrus, and nodata (no data,
saturated or defective). The least cloudy day under the thresholds wins; ties go to the lower
scene cloud cover, then the earlier day. Candidates are scored in that order and scoring stops at
the first perfect day, which cannot change the winner.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from odc.geo.geobox import GeoBox

from cenlib.ingest.read import AssetReadError, AssetRef, Readers, read_onto, read_stack_onto
from cenlib.stac import dialects

Item = dict[str, Any]
Signer = Callable[[str], str]
SCL_CLOUDY = np.array([3, 8, 9, 10], dtype=np.uint8)  # shadow, cloud medium/high, thin cirrus
SCL_NODATA = np.array([0, 1], dtype=np.uint8)  # no data, saturated or defective
REFL_NODATA = -32768  # int16 fill of the reflectance array (reflectance * 10000)
NEGATIVE = -200  # reflectance below -0.02 is not noise around zero


def _no_sign(href: str) -> str:
    return href


@dataclass(frozen=True)
class Candidate:
    """All items of one acquisition day over a patch (one per MGRS tile), sorted by id."""

    day: str
    items: tuple[Item, ...]

    @property
    def scene_cloud(self) -> float:
        return max(float(i["properties"].get("eo:cloud_cover", 100.0)) for i in self.items)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i["id"] for i in self.items)

    @property
    def datetime(self) -> str:
        return min(str(i["properties"]["datetime"]) for i in self.items)


def candidates(items: list[Item]) -> list[Candidate]:
    """Group items by UTC acquisition day."""
    by_day: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        when = dt.datetime.fromisoformat(str(it["properties"]["datetime"]).replace("Z", "+00:00"))
        by_day[when.date().isoformat()].append(it)
    return [
        Candidate(d, tuple(sorted(v, key=lambda i: i["id"]))) for d, v in sorted(by_day.items())
    ]


def scl_fractions(scl: npt.NDArray[np.uint8]) -> tuple[float, float]:
    """(cloud, nodata) shares of a patch's SCL, each 0..1."""
    n = scl.size
    return float(np.isin(scl, SCL_CLOUDY).sum() / n), float(np.isin(scl, SCL_NODATA).sum() / n)


@dataclass
class Choice:
    """The outcome of scene choice for one patch."""

    candidate: Candidate | None
    scl: npt.NDArray[np.uint8] | None = None
    cloud: float = 1.0
    nodata: float = 1.0
    tried: list[dict[str, Any]] = field(default_factory=list)
    errors: list[AssetReadError] = field(default_factory=list)
    reason: str = ""


def band_key(item: Item, band: str) -> str:
    """The asset key of a Sentinel-2 band (Earth Search name, such as "scl") in `item`'s
    dialect."""
    return dialects.asset_key(dialects.detect(item), band)


def asset_ref(item: Item, key: str, sign: Signer) -> AssetRef | None:
    """What to read for asset `key` of `item`, its href signed; None when it has no such asset."""
    asset = item.get("assets", {}).get(key)
    return None if asset is None else AssetRef(item["id"], key, sign(str(asset["href"])))


def _refs(cand: Candidate, band: str, sign: Signer) -> list[tuple[Item, AssetRef]]:
    out = []
    for it in cand.items:
        key = band_key(it, band)
        ref = asset_ref(it, key, sign)
        if ref is None:
            raise AssetReadError(it["id"], key, "", f"item has no asset {key!r} (band {band})")
        out.append((it, ref))
    return out


def day_scl(readers: Readers, cand: Candidate, gbox: GeoBox, sign: Signer) -> npt.NDArray[np.uint8]:
    """The day's SCL on the patch, first valid item first (nearest neighbour)."""
    out = np.zeros(gbox.shape.yx, np.uint8)
    for _it, ref in _refs(cand, "scl", sign):
        a = read_onto(readers, ref, gbox, "nearest", 0)
        if a is not None:
            fill = (out == 0) & (a != 0)
            out[fill] = a[fill]
            if out.all():  # covered: the day's other tiles add nothing (as in reflectance())
                break
    return out


def choose(
    readers: Readers,
    cands: list[Candidate],
    gbox: GeoBox,
    max_cloud: float,
    max_nodata: float,
    sign: Signer = _no_sign,
) -> Choice:
    """The least cloudy day over the patch with cloud <= max_cloud and nodata <= max_nodata."""
    best = Choice(None)
    if not cands:
        best.reason = "no Sentinel-2 item covers the patch in the time window"
        return best
    errors: list[AssetReadError] = []
    for cand in sorted(cands, key=lambda c: (c.scene_cloud, c.day)):
        try:
            scl = day_scl(readers, cand, gbox, sign)
        except AssetReadError as e:
            errors.append(e)
            continue
        cloud, nodata = scl_fractions(scl)
        best.tried.append({"day": cand.day, "cloud": round(cloud, 4), "nodata": round(nodata, 4)})
        if (
            cloud <= max_cloud
            and nodata <= max_nodata
            and (best.candidate is None or cloud < best.cloud)
        ):
            best.candidate, best.scl, best.cloud, best.nodata = cand, scl, cloud, nodata
            if cloud == 0.0 and nodata == 0.0:
                break
    best.errors = errors
    if best.candidate is None:
        tried = ", ".join(
            f"{t['day']}: cloud {100 * t['cloud']:.1f}%, nodata {100 * t['nodata']:.1f}%"
            for t in best.tried
        )
        best.reason = (
            f"no scene under the thresholds (cloud <= {100 * max_cloud:g}%, nodata <= "
            f"{100 * max_nodata:g}%); tried {tried or 'nothing readable'}; raise "
            "thresholds.max_patch_cloud / max_patch_nodata or widen the time window"
        )
    return best


def reflectance(
    readers: Readers,
    cand: Candidate,
    bands: tuple[str, ...],
    gbox: GeoBox,
    resampling: str,
    sign: Signer = _no_sign,
) -> npt.NDArray[np.int16]:
    """The day's bands on the patch as int16 reflectance * 10000 (REFL_NODATA where none).

    Each item is scaled by its own rule (:func:`dialects.reflectance_scale_offset`) before the
    mosaic, so items of different catalogues and baselines share one scale. An item's bands on
    the same pixel grid (10 m, 20 m) are read and warped together; they are opened and read at
    once when ``readers`` has a pool (:meth:`Readers.map`).
    """
    out = np.full((len(bands), *gbox.shape.yx), REFL_NODATA, np.int16)
    todo = np.ones((len(bands), *gbox.shape.yx), bool)
    per_band = [_refs(cand, b, sign) for b in bands]
    for n, it in enumerate(cand.items):
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        wanted = [bi for bi in range(len(bands)) if todo[bi].any()]
        opened = readers.map(readers.dataset, [per_band[bi][n][1] for bi in wanted])
        for bi, ds in zip(wanted, opened, strict=True):
            groups[(ds.shape, tuple(ds.transform), str(ds.crs))].append(bi)
        for idx in groups.values():
            refs = [per_band[bi][n][1] for bi in idx]
            dn = read_stack_onto(readers, refs, gbox, resampling, 0)
            if dn is None:
                continue
            for k, bi in enumerate(idx):
                scale, offset = dialects.reflectance_scale_offset(it, bands[bi])
                fill = todo[bi] & (dn[k] != 0)
                v = dn[k][fill].astype(np.float32) * np.float32(scale * 1e4)
                v += np.float32(offset * 1e4)
                out[bi][fill] = np.clip(np.rint(v), -32767, 32767).astype(np.int16)
                todo[bi] &= ~fill
        if not todo.any():
            break
    return out


def negative_dark_share(refl: npt.NDArray[np.int16], dark_quantile: float = 0.05) -> float:
    """Share of negative values among the darkest pixels of the darkest band (0 if none valid).

    Surface reflectance is never negative beyond noise, so when most of the darkest pixels
    are, the scale/offset rule was wrong for this scene (e.g. an offset removed twice).
    """
    worst = 0.0
    for band in refl:
        v = band[band != REFL_NODATA]
        if v.size < 100:
            continue
        k = max(1, int(v.size * dark_quantile))
        dark = np.partition(v, k - 1)[:k]
        worst = max(worst, float((dark < NEGATIVE).mean()))
    return worst
