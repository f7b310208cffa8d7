"""World build: scenes written by 2 threads against 1 thread (same bytes either way)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import best_of, report

from cenlib.world.build import build_world


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one = best_of(lambda: build_world(Path(tmp) / "w1", "demo", 0, workers=1), 1)
        two = best_of(lambda: build_world(Path(tmp) / "w2", "demo", 0, workers=2), 1)
    report("world build (demo preset): 1 vs 2 scene writers", one, two)


if __name__ == "__main__":
    main()
