"""Train / validation / test splits that are spatially disjoint and reproducible.

Every patch of a *block* lands in one split, so neighbours never leak between train and test.
A block is the ChatEarthNet tile at ``block_zoom`` (13: the four patches of a zoom-13 tile; 11:
a 4 x 4 group of tiles) or, on the UTM grid, ``utm_block`` x ``utm_block`` patches of a zone.

Blocks are dealt out in a seeded order, each to the split furthest below its share so far (the
one with the largest deficit): no split ends above its target by more than one block, and with
blocks of equal size (whole zoom-13 tiles) every split ends within one block of its target.
With ``strata`` (a label per patch, such as its dominant class) blocks are dealt per stratum
(a block's stratum is that of most of its patches), so each split holds every stratum with
enough blocks to go round, and the whole stays within one block per stratum.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence

from cenlib.errors import CenError
from cenlib.grid import PatchKey

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_RATIOS: tuple[float, ...] = (0.6, 0.1, 0.3)

Block = tuple[str, int, int, int]  # grid, zone, block column, block row


class SplitError(CenError, ValueError):
    """Split settings that cannot be used; the message names the setting."""


def block_of(key: PatchKey, block_zoom: int = 13, utm_block: int = 1) -> Block:
    """The block a patch belongs to (see the module doc)."""
    if key.grid == "chatearthnet":
        if not 0 <= block_zoom <= key.zone:
            raise SplitError(
                f"export.block_zoom {block_zoom} must be 0..{key.zone} (the grid's zoom): a "
                "block holds whole tiles"
            )
        shift = key.zone - block_zoom
        return key.grid, key.zone, key.col >> shift, key.row >> shift
    if utm_block < 1:
        raise SplitError(f"export.utm_block {utm_block} must be >= 1 (patches per block side)")
    return key.grid, key.zone, key.col // utm_block, key.row // utm_block


def _order(blocks: Sequence[Block], seed: int) -> list[Block]:
    """Blocks in a seeded order that does not depend on the order given."""

    def rank(b: Block) -> str:
        return hashlib.sha256(f"{seed}:{b}".encode()).hexdigest()

    return sorted(blocks, key=rank)


def _deal(
    blocks: Sequence[Block], sizes: Mapping[Block, int], ratios: Sequence[float], seed: int
) -> dict[Block, int]:
    total = sum(sizes[b] for b in blocks)
    have = [0] * len(ratios)
    out: dict[Block, int] = {}
    for b in _order(blocks, seed):
        # The split furthest below its target after taking this block wins; ties: the first.
        need = [r * total - h for r, h in zip(ratios, have, strict=True)]
        k = max(range(len(ratios)), key=lambda i: (need[i], -i))
        out[b] = k
        have[k] += sizes[b]
    return out


def assign_splits(
    keys: Sequence[PatchKey],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    seed: int = 0,
    block_zoom: int = 13,
    utm_block: int = 1,
    strata: Mapping[str, Hashable] | None = None,
    names: Sequence[str] = SPLITS,
) -> dict[str, str]:
    """Patch id -> split name for every key (see the module doc). ``ratios`` sum to 1, one per
    name; ``strata``: patch id -> stratum, for the stratified deal."""
    if len(ratios) != len(names):
        raise SplitError(f"export.ratios has {len(ratios)} values for {len(names)} splits")
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise SplitError(f"export.ratios {list(ratios)} must be >= 0 and sum to 1")
    block = {k.id: block_of(k, block_zoom, utm_block) for k in keys}
    sizes = Counter(block.values())
    if strata is None:
        dealt = _deal(list(sizes), sizes, ratios, seed)
    else:
        missing = [k.id for k in keys if k.id not in strata]
        if missing:
            raise SplitError(f"no stratum for patches {missing[:5]} (of {len(missing)})")
        votes: dict[Block, Counter[Hashable]] = defaultdict(Counter)
        for k in keys:
            votes[block[k.id]][strata[k.id]] += 1
        by_stratum: dict[Hashable, list[Block]] = defaultdict(list)
        for b, v in votes.items():
            top = max(v.items(), key=lambda kv: (kv[1], str(kv[0])))[0]
            by_stratum[top].append(b)
        dealt = {}
        for s in sorted(by_stratum, key=str):
            dealt |= _deal(by_stratum[s], sizes, ratios, seed)
    return {pid: names[dealt[b]] for pid, b in block.items()}
