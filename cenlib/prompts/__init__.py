"""Stage *prompt*: chat messages for every analysed patch, in a named, versioned style.

Entry: :func:`run_prompts`. Readers of what it writes: :data:`PROMPTS` (``prompts.jsonl`` in the
run directory). The style registry (:func:`get_style`, :data:`STYLES`) is the one way to build a
style's messages, describe its statement and split its answers; the vocabulary the styles share
(region and grid names, amount bins, seeded draws) is public for captioners that follow the
prompts' instructions. Modules: ``styles`` (the registry), ``cen35``, ``cen4v``, ``layout`` (the
styles), ``context`` (what a style is built from), ``stage`` (Dask), ``preview`` (one label map).
"""

from cenlib.prompts.cen35 import BINS, THRESHOLD, percent_bin
from cenlib.prompts.context import draws, join_words, ranked
from cenlib.prompts.preview import PreviewError, preview_labels
from cenlib.prompts.stage import PROMPTS, PromptSummary, message_key, run_prompts
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
)

__all__ = [
    "BANNED_WORDS",
    "BINS",
    "GRID3_NAMES",
    "PROMPTS",
    "REGION_NAMES",
    "STYLES",
    "THRESHOLD",
    "ClassLayout",
    "Message",
    "PatchContext",
    "PreviewError",
    "PromptStyle",
    "PromptSummary",
    "build_messages",
    "context_json",
    "draws",
    "get_style",
    "join_words",
    "message_key",
    "percent_bin",
    "preview",
    "preview_labels",
    "ranked",
    "run_prompts",
]
