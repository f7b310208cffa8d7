"""``cen caption --estimate``: what the caption stage would send, cost and take, before it runs.

Counts the prompt tokens of every request not yet answered (see :mod:`cenlib.captions.costs`
for how, and when the count is approximate) and prints, per endpoint, the cost and duration if
every request went there, then the pool's expected cost with traffic split by weight.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

from cenlib.captions import costs
from cenlib.captions.stage import RESPONSES_DIR, plan_requests
from cenlib.captions.worker import load_requests
from cenlib.config import RunConfig
from cenlib.prompts import PROMPTS


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def compute_estimate(cfg: RunConfig, console: Console | None = None) -> costs.Estimate:
    """What the caption stage would send for ``cfg``'s run directory: tokens, cost, time."""
    plan = plan_requests(cfg.output / PROMPTS, cfg.caption, cfg.output / RESPONSES_DIR)
    reqs: Any = load_requests(plan.path, plan.todo)
    if console is not None and len(reqs) > 1000:
        reqs = track(reqs, description="counting tokens", console=console)
    tokens = [costs.message_tokens(r.messages) for r in reqs]
    workers = cfg.cluster.n_workers if cfg.cluster.kind == "local" else 1
    return costs.estimate(tokens, cfg.caption, already_answered=plan.answered, workers=workers)


def print_estimate(cfg: RunConfig, console: Console | None = None) -> costs.Estimate:
    """Print :func:`compute_estimate` per endpoint and for the pool; returns it."""
    console = console or Console()
    est = compute_estimate(cfg, console)
    console.print(
        f"{est.requests} requests to send ({est.already_answered} prompts already answered); "
        f"{est.tokens_in:,} prompt tokens, {est.tokens_out_each} answer tokens each"
    )
    table = Table(title="if every request went to one endpoint")
    for col in ("endpoint", "model", "tokens", "prompt tokens", "cost (USD)", "time", "set by"):
        table.add_column(col, justify="left" if col in ("endpoint", "model") else "right")
    for r in est.endpoints:
        table.add_row(
            r.endpoint,
            r.model,
            "exact" if r.exact_tokens else "approximate",
            f"{r.tokens_in:,}",
            f"{r.cost:.4f}",
            _duration(r.seconds),
            r.limited_by,
        )
    console.print(table)
    console.print(
        f"pool (traffic split by weight): about ${est.pool_cost:.4f} and "
        f"{_duration(est.pool_seconds)} with every endpoint busy"
    )
    for note in est.notes:
        console.print(f"note: {note}")
    return est
