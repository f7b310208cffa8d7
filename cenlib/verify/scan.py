"""Regular expressions tried only where a match can start: at an anchor word or a few words
before it. A caption is a few hundred characters, and a pattern of many alternatives tried at
every one of them costs more than everything else the verifier does; the anchors are found in
one Aho-Corasick pass and leave most of the text unscanned, with the same matches."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence

import ahocorasick


class Anchored:
    """``pattern.finditer`` over normalised text, trying the pattern only at the start of an
    anchor's word and of the ``words_back`` words before it. Every match of ``pattern`` must
    start at one of those places: each alternative holds, within its first words, a word that
    begins with an anchor."""

    def __init__(self, pattern: re.Pattern[str], anchors: Iterable[str], words_back: int) -> None:
        self.pattern = pattern
        self.words_back = words_back
        self._ac = ahocorasick.Automaton()
        for w in anchors:
            self._ac.add_word(w, len(w))
        self._ac.make_automaton()

    def starts(self, low: str, words: Sequence[int] | None = None) -> list[int]:
        """Where a match may start, in order; ``words``: the start offsets of the words of
        ``low`` when the caller has them (then the words before an anchor are looked up)."""
        out: set[int] = set()
        if words is not None:
            for end, length in self._ac.iter(low):
                pos = end - length + 1
                if pos and low[pos - 1].isalnum():
                    continue  # inside a word ("least", "percent"): anchors start words
                k = bisect.bisect_right(words, pos) - 1
                out.update(words[max(0, k - self.words_back) : k + 1])
            return sorted(out)
        for end, length in self._ac.iter(low):
            pos = end - length + 1
            if pos and low[pos - 1].isalnum():
                continue
            out.add(pos)
            for _ in range(self.words_back):
                space = low.rfind(" ", 0, max(0, pos - 1))
                pos = space + 1
                out.add(pos)
                if space < 0:
                    break
        return sorted(out)

    def finditer(self, low: str, words: Sequence[int] | None = None) -> Iterator[re.Match[str]]:
        """The matches ``self.pattern.finditer(low)`` gives (non-empty ones), in order."""
        done = 0
        for pos in self.starts(low, words):
            if pos < done:
                continue
            m = self.pattern.match(low, pos)
            if m is not None and m.end() > m.start():
                done = m.end()
                yield m
