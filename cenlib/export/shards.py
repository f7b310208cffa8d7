"""WebDataset shards: ``webdataset/<split>-<NNNNNN>.tar``, one sample per patch.

Each export task writes the shard of its batch with webdataset's own ``TarWriter``; a sample is
``<key>.png`` (the RGB PNG), ``<key>.label.png`` (the land-cover PNG), ``<key>.json`` (every
field of the :class:`~.record.Record`) and ``<key>.txt`` (the caption), so a trainer reads
them with ``wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("png", "txt")``.

WebDataset groups a sample's files by the name before the first dot, so the key is the patch id
with ``%``, ``.`` and ``/`` (and anything else outside ``[A-Za-z0-9_~-]``) percent-encoded:
unique, dot-free and reversible (:func:`patch_of`); the json keeps the real patch id.
The bytes are reproducible: fixed mtime, owner and mode, members in a fixed order.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote, unquote

import webdataset as wds  # type: ignore[import-untyped]
from webdataset.tariterators import group_by_keys, tar_file_expander  # type: ignore[import-untyped]

from cenlib.export.record import Record

SHARD = "webdataset/{split}-{part:06d}.tar"
MTIME = 0  # every member's mtime, so equal samples give equal shards


def key_of(patch_id: str) -> str:
    """The sample key of a patch: dot-free and slash-free, unique (see the module doc)."""
    return quote(patch_id, safe="").replace(".", "%2E")


def patch_of(key: str) -> str:
    """The patch id a sample key was made from (the inverse of :func:`key_of`)."""
    return unquote(key)


def shard_bytes(samples: Sequence[tuple[Record, bytes, bytes]]) -> bytes:
    """A tar shard of ``samples`` (record, RGB PNG, land-cover PNG), one sample per patch."""
    seen: set[str] = set()
    buf = io.BytesIO()
    # encoder=False: we hand over bytes, so nothing is re-encoded behind our back.
    writer = wds.TarWriter(buf, encoder=False, mtime=MTIME)
    for rec, rgb, label in samples:
        if rec.patch_id in seen:
            raise ValueError(
                f"patch {rec.patch_id!r} is twice in one shard; WebDataset would merge the two "
                "samples (each patch must be exported once)"
            )
        seen.add(rec.patch_id)
        meta = json.dumps(rec.as_json(), ensure_ascii=False, separators=(",", ":"))
        writer.write(
            {
                "__key__": key_of(rec.patch_id),
                "png": rgb,
                "label.png": label,
                "json": meta.encode(),
                "txt": rec.caption.encode(),
            }
        )
    writer.close()
    return buf.getvalue()


def read_shards(urls: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The samples of shards ``urls`` (paths or URLs webdataset opens), in order, as dicts:
    ``patch_id``, ``caption``, ``rgb`` and ``label`` (PNG bytes), ``record`` (the json)."""
    # wds.WebDataset(urls, shardshuffle=False) reads these too, but never closes a shard it
    # opened (a ResourceWarning per shard); this is its pipeline with an opener that does.
    ds = wds.DataPipeline(
        wds.SimpleShardList(list(urls)),
        _opened,
        wds.pipelinefilter(tar_file_expander)(),
        wds.pipelinefilter(group_by_keys)(),
        wds.decode(),  # json and txt; the PNGs stay bytes
    )
    for s in ds:
        record: dict[str, Any] = s["json"]
        if patch_of(s["__key__"]) != record["patch_id"]:
            raise ValueError(
                f"sample {s['__key__']!r} of {s['__url__']} holds patch {record['patch_id']!r}: "
                "the shard was not written by shard_bytes"
            )
        yield {
            "patch_id": record["patch_id"],
            "caption": str(s["txt"]),
            "rgb": bytes(s["png"]),
            "label": bytes(s["label.png"]),
            "record": record,
        }


def _opened(shards: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each shard's stream, closed once its samples are read (or the reader is dropped)."""
    for shard in shards:
        with wds.gopen(shard["url"], "rb") as stream:
            yield {"url": shard["url"], "stream": stream}
