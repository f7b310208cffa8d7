"""Stage *prompt*: chat messages for every analysed patch, in a named, versioned style.

Entry: :func:`run_prompts` -> :class:`PromptSummary`. Readers of what it writes
(``prompts.jsonl`` in the run directory, :data:`PROMPTS`): :func:`read_prompts` (every line as
a :class:`Prompt`, with its ``facts``), :func:`prompt_lines` and :func:`read_prompts_at` (by
byte offset, for readers that keep offsets instead of messages); :class:`PromptsError`. The
style registry (:func:`get_style`, :data:`STYLES`, :class:`PromptStyle`) is the one way to
build a style's messages (one patch or a batch), describe its statement and split its
answers; the vocabulary the styles share (region and grid names, amount bins, seeded draws) is
public for captioners that follow the prompts' instructions. Modules: ``styles`` (the
registry), ``cen35``, ``cen4v``, ``layout`` (the styles), ``context`` (what a style is built
from), ``stage`` (Dask), ``read`` (the readers), ``preview`` (one label map).

Names other than the readers' load on first use (PEP 562): a caption task on a Dask worker
reads its prompt lines through this package, and importing the styles would import the
analysis stage and all it imports (tens of seconds of a worker's start on a busy machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cenlib.lazy import lazy_exports
from cenlib.prompts.read import (
    PROMPTS,
    Facts,
    Prompt,
    PromptsError,
    prompt_lines,
    prompts_file,
    read_prompts,
    read_prompts_at,
)

if TYPE_CHECKING:
    from cenlib.prompts.cen35 import BINS, THRESHOLD, percent_bin
    from cenlib.prompts.context import draws, join_words, ranked
    from cenlib.prompts.preview import PreviewError, load_labels, preview_labels
    from cenlib.prompts.stage import PromptSummary, message_key, run_prompts
    from cenlib.prompts.styles import (
        BANNED_WORDS,
        GRID3_NAMES,
        REGION_NAMES,
        STYLES,
        ClassLayout,
        Message,
        PatchContext,
        PromptStyle,
        build_messages,
        context_json,
        get_style,
        preview,
        single_answer,
    )

_LAZY: dict[str, str] = {
    **dict.fromkeys(("BINS", "THRESHOLD", "percent_bin"), "cenlib.prompts.cen35"),
    **dict.fromkeys(("draws", "join_words", "ranked"), "cenlib.prompts.context"),
    **dict.fromkeys(("PreviewError", "load_labels", "preview_labels"), "cenlib.prompts.preview"),
    **dict.fromkeys(("PromptSummary", "message_key", "run_prompts"), "cenlib.prompts.stage"),
    **dict.fromkeys(
        (
            "BANNED_WORDS",
            "GRID3_NAMES",
            "REGION_NAMES",
            "STYLES",
            "ClassLayout",
            "Message",
            "PatchContext",
            "PromptStyle",
            "build_messages",
            "context_json",
            "get_style",
            "preview",
            "single_answer",
        ),
        "cenlib.prompts.styles",
    ),
}


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)


__all__ = [
    "BANNED_WORDS",
    "BINS",
    "GRID3_NAMES",
    "PROMPTS",
    "REGION_NAMES",
    "STYLES",
    "THRESHOLD",
    "ClassLayout",
    "Facts",
    "Message",
    "PatchContext",
    "PreviewError",
    "Prompt",
    "PromptStyle",
    "PromptSummary",
    "PromptsError",
    "build_messages",
    "context_json",
    "draws",
    "get_style",
    "join_words",
    "load_labels",
    "message_key",
    "percent_bin",
    "preview",
    "preview_labels",
    "prompt_lines",
    "prompts_file",
    "ranked",
    "read_prompts",
    "read_prompts_at",
    "run_prompts",
    "single_answer",
]
