"""The one base of every error the tool raises on purpose, so that ``cen`` and ``jobs/`` turn
any of them into a one-line message and an exit code instead of a traceback."""

from __future__ import annotations


class CenError(Exception):
    """An error that says what failed, where, and how to fix it (its message is for users)."""

    exit_code: int = 2  # bad input or a state the user must fix; 1 is for lost work
