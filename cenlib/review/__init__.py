"""Human review of a run's captions: a local web app, decisions in SQLite.

``cen review RUN_DIR`` calls :func:`serve_review`: a page per patch with its true colour image,
its land-cover map in ChatEarthNet's palette, its class shares and its caption (class mentions
in their colours, violations marked with their reasons); keys accept, reject or edit it.
Readers of what it writes (``<run>/review.sqlite``, :data:`REVIEW_DB`): :func:`read_decisions`
(the latest :class:`Decision` per patch) and :func:`decision_history` (every decision).
:class:`ReviewServer` runs the app in a thread (tests, notebooks).

Modules: ``db`` (the decisions), ``patches`` (what the page shows of a run), ``caption``
(caption segments by span), ``images`` (PNGs), ``app`` (the Starlette app and its token gate),
``server`` (uvicorn), ``static/`` (the page, its script and style sheet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cenlib.lazy import lazy_exports
from cenlib.review.db import REVIEW_DB, Decision, ReviewDBError, decision_history, read_decisions

if TYPE_CHECKING:
    from cenlib.review.server import ReviewServer, ReviewServerError, serve_review

# The server side (Starlette, the store, the verify lexicon) loads on first use: a reader of
# decisions (the export) needs only sqlite.
_LAZY = dict.fromkeys(("ReviewServer", "ReviewServerError", "serve_review"), "cenlib.review.server")
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

__all__ = [
    "REVIEW_DB",
    "Decision",
    "ReviewDBError",
    "ReviewServer",
    "ReviewServerError",
    "decision_history",
    "read_decisions",
    "serve_review",
]
