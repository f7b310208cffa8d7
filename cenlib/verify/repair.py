"""Repair: a failed caption goes back to the pool with a follow-up that states the truth.

For round ``r`` the stage writes ``verify/repair-r/prompts.jsonl``: each failed patch's own
request (its fallback request for a multi-patch line), the caption it got as the assistant's
turn, and a user turn built by :func:`correction` from the violations and the patch's pixels
("There is no wetland in this image; the water lies in the bottom right."). The caption stage
answers that file in that directory, so every round has its own request keys and answers (the
same failing caption in the same round is the same request: a resumed run pays nothing twice).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cenlib.classes import CLASS_NAMES
from cenlib.io import write_atomic
from cenlib.prompts import PROMPTS, read_prompts
from cenlib.verify.checks import Rules, Violation
from cenlib.verify.places import PLACES, QUADRANTS, place_counts

_PLACE = {p: i for i, p in enumerate(PLACES)}


def amount_words(share: float) -> str:
    """A share in words, as a caption would say it."""
    for top, words in (
        (0.1, "only a very small part"),
        (0.3, "a small part"),
        (0.5, "a medium part"),
        (0.8, "a large part"),
    ):
        if share < top:
            return words
    return "almost all"


def _where(cls: int, pc: npt.NDArray[np.int64]) -> str:
    """The quadrants that hold most of a class, in words."""
    per = np.array([pc[_PLACE[q], cls] for q in QUADRANTS], dtype=float)
    if per.sum() == 0:
        return "nowhere"
    order = np.argsort(-per, kind="stable")
    keep = [QUADRANTS[i] for i in order if per[i] >= 0.25 * per.sum()][:3]
    return " and ".join(keep) if len(keep) < 3 else "most parts of the image"


def _share(cls: int, names: Sequence[str], pc: npt.NDArray[np.int64]) -> float:
    rows = pc[[_PLACE[n] for n in names]]
    land = rows[:, 1:].sum()
    return float(rows[:, cls].sum() / land) if land else 0.0


def correction(
    violations: Sequence[Violation], counts: npt.ArrayLike, rules: Rules
) -> str:  # fmt: skip
    """The follow-up for a caption with ``violations`` on a patch with region ``counts``."""
    pc = place_counts(np.asarray(counts))
    said: list[str] = []

    def say(s: str) -> None:
        if s not in said:
            said.append(s)

    for v in violations:
        kind, name = v["type"], v["class"]
        cls = CLASS_NAMES.index(name) if name else 0
        if kind == "hallucinated":
            say(f"There is no {name} in this image.")
        elif kind == "omitted":
            share = _share(cls, ["whole"], pc)
            say(f"{name.capitalize()} covers {amount_words(share)} of the image; describe it.")
        elif kind == "misplaced":
            say(
                f"There is no {name} in the {v.get('place', 'part you named')}; "
                f"the {name} lies in the {_where(cls, pc)}."
            )
        elif kind == "amount":
            scope = str(v.get("scope", "whole"))
            share = _share(cls, scope.split(" and "), pc)
            where = "the image" if scope == "whole" else f"the {scope}"
            say(f"{name.capitalize()} covers {amount_words(share)} of {where}.")
        elif kind == "banned":
            say(f"Do not use the words '{v['words']}', and do not hedge or give percentages.")
        elif kind == "truncated":
            say("Your description was cut off: end it with a complete sentence.")
        elif kind == "length":
            say(f"Write between {rules.min_words} and {rules.max_words} words.")
        elif kind == "language":
            say("Write in English.")
    return (
        "Your description does not match the land cover of this image. "
        + " ".join(said)
        + " Write the whole description again as one paragraph, keeping what was right."
    )


def write_repair_prompts(
    prompts: Path,
    out: Path,
    failing: Mapping[str, tuple[str, str]],
) -> int:
    """Write ``out/prompts.jsonl``: for each patch id of ``failing`` (-> (caption, follow-up)),
    its own request, the caption and the follow-up; returns the lines written."""
    lines: list[bytes] = []
    for p in read_prompts(prompts):
        for k, pid in enumerate(p.ids):
            if pid not in failing:
                continue
            messages = p.messages if len(p.ids) == 1 else p.fallback[k]
            caption, follow_up = failing[pid]
            rec: dict[str, Any] = {
                "patch_id": pid,
                "style": p.style,
                "seed": p.seed,
                "messages": [
                    *messages,
                    {"role": "assistant", "content": caption},
                    {"role": "user", "content": follow_up},
                ],
                "facts": p.facts_of(k),
            }
            lines.append((json.dumps(rec) + "\n").encode())
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / PROMPTS, lines)
    return len(lines)
