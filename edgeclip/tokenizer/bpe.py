"""Pure-Python CLIP byte-pair encoding: one pre-token (word) -> token ids, with the same merge order as OpenCLIP.

Merges are applied lowest rank first, all occurrences of a pair left to right. Short words use that
loop directly; long words are split where no vocabulary token can ever span the boundary, and each piece
gets a few loop passes and then, if unfinished, a heap (same result, O(n log n)), so a megabyte-long
"word" stays tractable and stops once enough ids are known.
"""
from __future__ import annotations

import heapq
from typing import Optional

from edgeclip.tokenizer.byte_alphabet import byte_to_char

SHORT_WORD = 48  # symbols; longer words take the split + heap path
LONG_PASSES = 32  # whole-word passes tried on a long piece (cheap for repetitive text) before switching to the heap
CACHE_LIMIT = 100_000  # cached words before the cache is reset (bounded memory in long-running processes)


class BytePairEncoder:
    """CLIP BPE over a vocabulary (token -> id) and ranked merges, words end with the suffix `eow`."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], eow: str):
        self.vocab = vocab
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.eow = eow
        self._byte_chars = byte_to_char()
        self._cache: dict[str, list[int]] = {}
        self._joinable: Optional[frozenset[tuple[str, str]]] = None

    def encode_word(self, word: str, budget: int) -> list[int]:
        """Ids of one pre-token; for long words only the first `budget` ids are guaranteed (enough for truncation)."""
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        chars = word if word.isascii() and word.isprintable() else "".join(map(self._byte_chars.__getitem__, word.encode("utf-8")))
        if len(chars) > SHORT_WORD:
            return self._encode_long(chars, budget)
        ids = [self.vocab[s] for s in self._merge_passes([*chars[:-1], chars[-1] + self.eow])[0]]
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _merge_passes(self, word: list[str], max_passes: Optional[int] = None) -> tuple[list[str], bool]:
        """OpenCLIP's loop: find the lowest-ranked adjacent pair, merge all its occurrences, repeat.

        Returns (symbols, finished); with `max_passes` it may stop early in a valid intermediate state.
        """
        ranks = self.ranks
        passes = 0
        while len(word) > 1:
            if max_passes is not None and passes >= max_passes:
                return word, False
            passes += 1
            best, best_rank = None, None
            for pair in zip(word, word[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged, out, i, n = first + second, [], 0, len(word)
            while i < n:
                if i < n - 1 and word[i] == first and word[i + 1] == second:
                    out.append(merged)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return word, True

    def _encode_long(self, chars: str, budget: int) -> list[int]:
        """Merge a long word piece by piece (pieces never interact), stopping after `budget` ids."""
        ids: list[int] = []
        for start, end in self._pieces(chars):
            symbols = list(chars[start:end])
            if end == len(chars):
                symbols[-1] += self.eow
            symbols, finished = self._merge_passes(symbols, max_passes=LONG_PASSES)
            if not finished:
                symbols = _merge_heap(symbols, self.ranks)
            ids.extend(self.vocab[s] for s in symbols)
            if len(ids) >= budget:
                break
        return ids

    def _pieces(self, chars: str) -> list[tuple[int, int]]:
        """Split points between characters that no vocabulary token contains next to each other."""
        if self._joinable is None:
            self._joinable = frozenset(
                pair for token in self.vocab for pair in zip(token.removesuffix(self.eow), token.removesuffix(self.eow)[1:])
            )
        joinable, bounds = self._joinable, [0]
        for i in range(1, len(chars)):
            if (chars[i - 1], chars[i]) not in joinable:
                bounds.append(i)
        bounds.append(len(chars))
        return list(zip(bounds, bounds[1:]))


def _merge_heap(word: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Same result as the short loop in O(n log n): pop the (rank, position)-smallest live pair, merge, relink."""
    n = len(word)
    sym: list[Optional[str]] = list(word)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    heap = [(r, i) for i in range(n - 1) if (r := ranks.get((word[i], word[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = nxt[i] if sym[i] is not None else n
        if j >= n or ranks.get((sym[i], sym[j])) != rank:  # stale entry: the pair at i changed since it was pushed
            continue
        sym[i] = sym[i] + sym[j]  # type: ignore[operator]
        sym[j] = None
        nxt[i] = nxt[j]
        if nxt[i] < n:
            prv[nxt[i]] = i
        for left, right in ((prv[i], i), (i, nxt[i])):
            if left >= 0 and right < n:
                r = ranks.get((sym[left], sym[right]))  # type: ignore[arg-type]
                if r is not None:
                    heapq.heappush(heap, (r, left))
    return [s for s in sym if s is not None]
