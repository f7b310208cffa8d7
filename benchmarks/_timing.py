"""Timing helper shared by the benchmarks: best of N runs, ratio against a baseline."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def report(name: str, baseline_s: float, candidate_s: float) -> None:
    print(
        f"{name}: baseline {baseline_s:.3f} s, candidate {candidate_s:.3f} s, "
        f"speed-up x{baseline_s / candidate_s:.2f}"
    )
