"""Per-stage figures of a job run, as the scale benchmarks print them (from the job's own
``summary.json`` profile): one table per run, then peak memory of the last size against the
first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MIB = 2**20


def print_stages(summary: Mapping[str, Any], stages: Sequence[str], n: int) -> dict[str, Any]:
    """Wall time, patches/s (``n`` patches), tasks, peak worker memory and spill per stage;
    returns the run's profile."""
    print(
        f"  {'stage':<8} {'wall s':>8} {'patches/s':>10} {'tasks':>7} "
        f"{'peak worker MiB':>16} {'spill MiB':>10}"
    )
    prof = dict(summary["profile"])
    for stage in stages:
        f = prof.get(stage, {"wall": summary["wall"][stage]})
        print(
            f"  {stage:<8} {f['wall']:>8.1f} {n / f['wall']:>10.1f} {f.get('tasks', '-'):>7} "
            f"{f.get('peak_memory', 0) / MIB:>16.0f} {f.get('spill', 0) / MIB:>10.0f}"
        )
    return prof


def print_memory_ratio(profiles: Mapping[int, Mapping[str, Any]], stages: Sequence[str]) -> None:
    """Peak worker memory per stage, the largest size against the smallest (it must not grow
    with the number of patches); nothing when only one size ran."""
    if len(profiles) < 2:
        return
    lo, hi = min(profiles), max(profiles)
    print(f"peak worker memory, {hi} patches against {lo} (must not grow with the patches):")
    for stage in stages:
        a = profiles[lo].get(stage, {}).get("peak_memory")
        b = profiles[hi].get(stage, {}).get("peak_memory")
        if a and b:
            print(f"  {stage:<8} {a / MIB:>6.0f} MiB -> {b / MIB:>6.0f} MiB  x{b / a:.2f}")
