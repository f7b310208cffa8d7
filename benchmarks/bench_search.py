"""Grouped STAC search (one per area) against one search per patch-sized box."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import best_of, report

from cenlib.stac.search import SearchRequest, search
from cenlib.stac.server import serve_world
from cenlib.world.build import ensure_world


def main() -> None:
    world = Path(tempfile.gettempdir()) / "cen-bench-worlds" / "demo-seed0"
    manifest = ensure_world(world, "demo", 0)
    with serve_world(world) as urls:
        url = urls["earth-search"]
        areas = [tuple(a["bbox"]) for a in manifest["areas"]]
        # ~2.4 km patch boxes tiling every area, as a per-patch search would issue them.
        patches = []
        for w, s, e, n in areas:
            for lon in np.arange(w, e, 0.03):
                for lat in np.arange(s, n, 0.02):
                    patches.append((lon, lat, min(lon + 0.03, e), min(lat + 0.02, n)))

        def grouped() -> None:
            for b in areas:
                search(SearchRequest(url, "sentinel-2-l2a", b, max_cloud_cover=30))

        def per_patch() -> None:
            for b in patches:
                search(SearchRequest(url, "sentinel-2-l2a", b, max_cloud_cover=30))

        report(
            f"search: {len(areas)} grouped vs {len(patches)} per-patch searches",
            best_of(per_patch, 2),
            best_of(grouped, 3),
        )


if __name__ == "__main__":
    main()
