"""The verifier: how fast it reads captions, and how well it finds what is wrong in them.

Speed, on one core, over rules-captioner captions of random class maps plus the evaluation
set's captions (repeated to N captions):

- baseline: the naive matcher, one compiled regular expression per lexicon entry (each with its
  plurals, case-insensitive, whole words), searched over every caption;
- ours: :func:`cenlib.verify.find_mentions` (one Aho-Corasick pass, negation included);
- and the whole :func:`cenlib.verify.check` (mentions, places, every violation type).

Quality: the evaluation set of ``tests/verify/data`` (``eval.jsonl``: tuned on; and
``heldout.jsonl`` when present: written separately and never tuned on): detection per injected
error type, false alarms on clean captions, the confusion table per violation type.
Prints figures, asserts nothing. Target: >= 5,000 captions/s per core for ``check``.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "verify")]
from caption_support import label_maps  # noqa: E402
from eval_set import load_eval, load_maps  # noqa: E402
from scoring import rules, score_eval, table  # noqa: E402

from cenlib.analysis import region_counts  # noqa: E402
from cenlib.captions.rules import answer  # noqa: E402
from cenlib.prompts import preview_labels  # noqa: E402
from cenlib.verify import LEXICON, check, find_mentions  # noqa: E402
from cenlib.verify.lexicon import _variants  # noqa: E402

N = 20_000


def naive_patterns() -> list[tuple[int, re.Pattern[str]]]:
    out = []
    for cls, words in LEXICON.items():
        for w in words:
            alts = "|".join(re.escape(v).replace(r"\ ", r"[\s-]") for v in _variants(w.lower()))
            out.append((cls, re.compile(rf"\b(?:{alts})\b", re.IGNORECASE)))
    return out


def naive_mentions(text: str, patterns: list[tuple[int, re.Pattern[str]]]) -> set[int]:
    return {cls for cls, p in patterns if p.search(text)}


def corpus(tmp: Path) -> tuple[list[str], np.ndarray]:
    maps = label_maps(400, seed=11)
    np.save(tmp, maps)
    texts = [
        answer(pv["messages"], {k: v for k, v in pv.items() if k != "messages"}, 0, str(i))
        for i, pv in enumerate(preview_labels(tmp, "chatearthnet-3.5", 0))
    ]
    counts = list(region_counts(maps))
    ev_maps = region_counts(load_maps())
    for line in load_eval():
        texts.append(line["caption"])
        counts.append(ev_maps[line["index"]])
    reps = -(-N // len(texts))
    return (texts * reps)[:N], np.stack((counts * reps)[:N])


def rate(fn: object, n: int) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return n / best


def stage(texts: list[str], counts: np.ndarray, one_core: float) -> None:
    """The verify stage end to end (read captions and the store, Dask tasks, verdicts) on a
    LocalCluster of 2 worker processes, against the single-core kernel rate."""
    import tempfile

    import zarr
    from distributed import Client, LocalCluster

    from cenlib.config import RunConfig
    from cenlib.verify import run_verify

    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        ids = [f"p{i:06d}" for i in range(len(texts))]
        g = zarr.open_group(str(out / "dataset.zarr"), mode="w")
        g.create_array("patch_id", shape=(len(ids),), dtype=str)[:] = np.array(ids, dtype=object)
        g.create_array("region_counts", data=counts.astype(np.int32), chunks=(4096, 15, 12))
        with open(out / "captions.jsonl", "w", encoding="utf-8") as f:
            for pid, text in zip(ids, texts, strict=True):
                rec = {"patch_id": pid, "style": "chatearthnet-3.5@1", "key": "0" * 64,
                       "endpoint": "bench", "model": "bench", "caption": text}  # fmt: skip
                f.write(json.dumps(rec) + "\n")
        cfg = RunConfig.model_validate(
            {"output": str(out), "verify": {"repair_rounds": 0, "batch_size": 2000}}
        )
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as c, Client(c) as cl:
            run_verify(cfg, cl)  # warm the workers (imports)
            t = time.perf_counter()
            summary = run_verify(cfg, cl)
            dt = time.perf_counter() - t
    n = summary.verified
    print(
        f"\nstage on 2 workers: {n:,} captions in {dt:.2f} s = {n / dt:,.0f} captions/s "
        f"(x{n / dt / one_core:.2f} the one-core kernel rate; {summary.passed:,} passed)"
    )


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        texts, counts = corpus(Path(d) / "maps.npy")
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"{len(texts)} captions, {words:.0f} words on average, one core\n")
    patterns = naive_patterns()
    sample = texts[:2000]
    base = rate(lambda: [naive_mentions(t, patterns) for t in sample], len(sample))
    ours = rate(lambda: [find_mentions(t) for t in texts], len(texts))
    r = rules()
    full = rate(lambda: [check(t, c, r) for t, c in zip(texts, counts, strict=True)], len(texts))
    print("| route | captions/s | vs naive |")
    print("| --- | --- | --- |")
    print(f"| naive: one regex per lexicon entry ({len(patterns)}) | {base:,.0f} | x1.00 |")
    print(f"| find_mentions (Aho-Corasick + negation) | {ours:,.0f} | x{ours / base:.1f} |")
    print(f"| check (every violation type) | {full:,.0f} | x{full / base:.1f} |")
    stage(texts, counts, full)
    # The two find the same classes (negated ones included: the naive route cannot tell).
    same = sum(
        {m.cls for m in find_mentions(t)} == naive_mentions(t, patterns) for t in sample[:500]
    )
    print(f"\nsame classes found as the naive route: {same} of 500 captions")
    data = ROOT / "tests" / "verify" / "data"
    maps = load_maps()
    for name in ("eval.jsonl", "heldout.jsonl"):
        path = data / name
        if not path.is_file():
            print(f"\n{name}: not present")
            continue
        lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        print(f"\n## {name} ({len(lines)} captions)\n")
        print(table(score_eval(maps, lines)))


if __name__ == "__main__":
    main()
