"""Stage *verify*: every caption checked against the land cover it describes; repairs; review.

Entry: :func:`run_verify` ``(cfg, client, *, caption, max_cost, on_round)`` ->
:class:`VerifySummary` (also written to ``verify_report.json``). Readers of what it writes:
:func:`read_verdicts` (``verify.parquet``, :data:`VERDICTS`, one :class:`Verdict` per caption).
Also public: :func:`check` (the pure kernel: one caption, one patch's region counts, a style's
:class:`Rules`), :func:`find_mentions` (class mentions with spans and negation, for highlighting),
:data:`LEXICON` (the documented words per class) and :func:`preview_verdicts`
(``cen verify preview``).

Modules: :mod:`.lexicon` (class words, negation), :mod:`.places` (position phrases, pixels per
place), :mod:`.checks` (the violations), :mod:`.repair` (follow-ups through the caption pool),
:mod:`.stage` (the Dask wrapper and outputs), :mod:`.preview`, :mod:`.read`.

Names load on first use (PEP 562), so that the review app and the export can read verdicts
without importing the stage's Dask and caption machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cenlib.lazy import lazy_exports
from cenlib.verify.read import VERDICTS, Verdict, VerdictsError, read_verdicts

if TYPE_CHECKING:
    from cenlib.verify.checks import PENALTY, TYPES, Rules, Violation, check, score
    from cenlib.verify.lexicon import LEXICON, Mention, find_mentions
    from cenlib.verify.preview import preview_verdicts
    from cenlib.verify.stage import VerifyError, VerifySummary, rules_for, run_verify

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("PENALTY", "TYPES", "Rules", "Violation", "check", "score"), "cenlib.verify.checks"
    ),
    **dict.fromkeys(("LEXICON", "Mention", "find_mentions"), "cenlib.verify.lexicon"),
    **dict.fromkeys(("preview_verdicts",), "cenlib.verify.preview"),
    **dict.fromkeys(
        ("VerifyError", "VerifySummary", "rules_for", "run_verify"), "cenlib.verify.stage"
    ),
}

__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

__all__ = [
    "LEXICON",
    "PENALTY",
    "TYPES",
    "VERDICTS",
    "Mention",
    "Rules",
    "Verdict",
    "VerdictsError",
    "VerifyError",
    "VerifySummary",
    "Violation",
    "check",
    "find_mentions",
    "preview_verdicts",
    "read_verdicts",
    "rules_for",
    "run_verify",
    "score",
]
