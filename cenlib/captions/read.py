"""Reading what the caption stage wrote: ``captions.jsonl``, one :class:`Caption` per patch."""

from __future__ import annotations

import json
from collections.abc import Iterator
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


def read_captions(run_dir: Path | str) -> Iterator[Caption]:
    """Every caption of a run (its directory, or the ``captions.jsonl`` file), in file order."""
    path = captions_file(run_dir)
    if not path.is_file():
        raise CaptionsReadError(f"no captions at {path}; run `cen caption CONFIG` first")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                yield Caption(
                    str(rec["patch_id"]),
                    str(rec["style"]),
                    str(rec["key"]),
                    str(rec["endpoint"]),
                    str(rec["model"]),
                    str(rec["caption"]),
                )
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CaptionsReadError(
                    f"{path}:{n} is not a caption record ({e}); run `cen caption CONFIG` again"
                ) from e
