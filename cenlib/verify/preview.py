"""`cen verify preview`: the verifier's verdict on captions of some class maps, no run needed.

Reads an ``(n, S, S)`` uint8 map file as ``cen prompt preview`` does and a JSONL file of
``{"index": i, "caption": "..."}`` lines (other keys ignored); yields, per line and in order,
``{"index", "pass", "score", "violations": [{"type", "class", "words", "span", "reason"}]}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cenlib import analysis
from cenlib.config import VerifyConfig
from cenlib.prompts import PreviewError, load_labels
from cenlib.verify.checks import check, score
from cenlib.verify.stage import VerifyError, rules_for


def _lines(path: Path, n_maps: int) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise PreviewError(f"{path}: no such captions file; give a JSONL file of captions")
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                i, caption = rec["index"], rec["caption"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise PreviewError(
                    f'{path}:{n}: need a JSON object with "index" and "caption" ({e})'
                ) from e
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_maps:
                raise PreviewError(f"{path}:{n}: index {i!r} is not a map index 0..{n_maps - 1}")
            if not isinstance(caption, str):
                raise PreviewError(
                    f"{path}:{n}: caption must be a string, not {type(caption).__name__}"
                )
            yield i, caption


def preview_verdicts(
    labels: Path, captions: Path, style: str = "chatearthnet-3.5", cfg: VerifyConfig | None = None
) -> Iterator[dict[str, Any]]:
    """One verdict object per caption line (see the module doc)."""
    try:
        rules = rules_for(style, cfg or VerifyConfig())
    except VerifyError as e:
        raise PreviewError(str(e)) from e
    maps = load_labels(labels)
    counts = analysis.region_counts(maps)
    for i, text in _lines(captions, len(maps)):
        found = check(text, counts[i], rules)
        yield {"index": i, "pass": not found, "score": score(found), "violations": found}
