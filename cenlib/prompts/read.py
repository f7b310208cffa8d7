"""Reading what the prompt stage wrote: ``prompts.jsonl``, one :class:`Prompt` per line.

Light on purpose (json and dataclasses only): the caption stage's Dask tasks read their own
prompt lines with it, and a worker should not import the prompt styles to do so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cenlib.errors import CenError

PROMPTS = "prompts.jsonl"

Facts = dict[str, Any]
"""One patch's statement: its style's ``describe`` JSON (see :class:`PromptStyle`)."""


class PromptsError(CenError, ValueError):
    """``prompts.jsonl`` is missing or holds a line that is not a prompt; says how to rebuild."""


@dataclass(frozen=True)
class Prompt:
    """One line of ``prompts.jsonl``: a request for one patch, or for several (chatearthnet-4v
    with ``prompt.per_request`` > 1, then with each patch's own request as ``fallback``).

    ``facts``: the statement the messages were rendered from, as written: one :data:`Facts` for
    a single-patch line, a list aligned with ``patch_ids`` for a multi-patch one; ``None`` for a
    file written before prompt records carried facts.
    """

    patch_id: str
    style: str
    seed: int
    messages: list[dict[str, Any]]
    patch_ids: tuple[str, ...] = ()
    fallback: tuple[list[dict[str, Any]], ...] = ()
    facts: Facts | list[Facts] | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        """The patches this line asks about, in order."""
        return self.patch_ids or (self.patch_id,)

    def facts_of(self, k: int) -> Facts | None:
        """The facts of the ``k``-th patch of :attr:`ids` (``None`` when the line has none)."""
        if isinstance(self.facts, list):
            return self.facts[k] if k < len(self.facts) else None
        return self.facts if k == 0 else None


def prompts_file(path: Path | str) -> Path:
    """``path`` itself, or ``path/prompts.jsonl`` when ``path`` is a run directory."""
    p = Path(path)
    return p / PROMPTS if p.is_dir() else p


def parse_prompt(line: bytes | str, where: str = "") -> Prompt:
    """One line of ``prompts.jsonl``; :class:`PromptsError` names ``where`` when it is not one."""
    try:
        rec = json.loads(line)
        facts = rec.get("facts")
        if facts is not None and not isinstance(facts, dict | list):
            raise TypeError(f"facts must be an object or a list, not {type(facts).__name__}")
        return Prompt(
            str(rec["patch_id"]),
            str(rec["style"]),
            int(rec["seed"]),
            rec["messages"],
            tuple(rec.get("patch_ids") or ()),
            tuple(rec.get("fallback") or ()),
            facts,
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise PromptsError(
            f"{where or 'a line'} is not a prompt line ({e}); rebuild it with `cen prompt CONFIG`"
        ) from e


def prompt_lines(path: Path | str) -> Iterator[tuple[int, int, Prompt]]:
    """``(line number, byte offset, prompt)`` of every non-empty line, in file order."""
    p = prompts_file(path)
    if not p.is_file():
        raise PromptsError(f"no prompts at {p}; run `cen prompt CONFIG` first")
    offset = 0
    with open(p, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, offset, parse_prompt(line, f"{p}:{n}")
            offset += len(line)


def read_prompts(path: Path | str) -> Iterator[Prompt]:
    """Every prompt of ``prompts.jsonl`` (the file, or the run directory holding it)."""
    for _, _, prompt in prompt_lines(path):
        yield prompt


def read_prompts_at(path: Path | str, offsets: Iterable[int]) -> Iterator[Prompt]:
    """The prompts whose lines start at these byte offsets (see :func:`prompt_lines`), read
    where they are: a task that needs a few lines of a large file reads only those."""
    p = prompts_file(path)
    with open(p, "rb") as f:
        for off in offsets:
            f.seek(off)
            yield parse_prompt(f.readline(), f"{p}:byte {off}")
