"""Reading what the caption stage wrote: ``captions.jsonl``, one :class:`Caption` per patch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cenlib.errors import CenError

CAPTIONS = "captions.jsonl"


class CaptionsReadError(CenError, ValueError):
    """``captions.jsonl`` is missing or holds a line that is not a caption record."""


@dataclass(frozen=True)
class Caption:
    """One patch's caption. ``key``: the request key of the answer it came from (patches of a
    multi-patch request share it); ``style``: the prompt style, ``name@version``."""

    patch_id: str
    style: str
    key: str
    endpoint: str
    model: str
    caption: str


def captions_file(path: Path | str) -> Path:
    """``path`` itself, or ``path/captions.jsonl`` when ``path`` is a run directory."""
    p = Path(path)
    return p / CAPTIONS if p.is_dir() else p


def caption_lines(run_dir: Path | str) -> Iterator[tuple[int, Caption]]:
    """``(byte offset, caption)`` of every line of a run's ``captions.jsonl`` (its directory, or
    the file), in file order: a task given offsets reads only its own lines
    (:func:`read_captions_at`)."""
    path = captions_file(run_dir)
    if not path.is_file():
        raise CaptionsReadError(f"no captions at {path}; run `cen caption CONFIG` first")
    offset = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield offset, _parse(line, f"{path}:{n}")
            offset += len(line)


def read_captions(run_dir: Path | str) -> Iterator[Caption]:
    """Every caption of a run (its directory, or the ``captions.jsonl`` file), in file order."""
    for _, caption in caption_lines(run_dir):
        yield caption


def read_captions_at(path: Path | str, offsets: Iterable[int]) -> Iterator[Caption]:
    """The captions whose lines start at these byte offsets (see :func:`caption_lines`)."""
    p = captions_file(path)
    with open(p, "rb") as f:
        for off in offsets:
            f.seek(off)
            yield _parse(f.readline(), f"{p}:byte {off}")


def _parse(line: bytes, where: str) -> Caption:
    try:
        rec = json.loads(line)
        return Caption(
            str(rec["patch_id"]),
            str(rec["style"]),
            str(rec["key"]),
            str(rec["endpoint"]),
            str(rec["model"]),
            str(rec["caption"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CaptionsReadError(
            f"{where} is not a caption record ({e}); run `cen caption CONFIG` again"
        ) from e
