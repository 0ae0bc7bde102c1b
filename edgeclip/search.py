"""Brute-force cosine search over an index's embeddings: one float32 matrix held in memory, matmul + argpartition."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edgeclip.errors import InputError
from edgeclip.zeroshot import l2_normalize


@dataclass(frozen=True)
class Match:
    """One search result: the file's path and its cosine similarity to the query."""

    path: str
    score: float


class VectorMatrix:
    """Row ids [N] and unit vectors float32 [N, D] of one index generation, searched with one matmul."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, generation: int = 0):
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise InputError(f"vectors must be [N, D] with one id per row; got {vectors.shape} for {len(ids)} ids")
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.generation = generation

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        """Memory held by the ids and vectors."""
        return int(self.ids.nbytes + self.vectors.nbytes)

    def top_k(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best rows for a [D] query: (ids, scores), best first."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"top_k must be a positive integer, got {k!r}")
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if len(self) and query.shape[0] != self.vectors.shape[1]:
            raise InputError(f"query has {query.shape[0]} dimensions, the index holds {self.vectors.shape[1]}")
        if not len(self):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = self.vectors @ query
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        return self.ids[best], scores[best]


def combine_queries(text: Optional[np.ndarray], image: Optional[np.ndarray], weight: float) -> np.ndarray:
    """One unit query from a text and/or image embedding: normalize(weight * text + (1 - weight) * image)."""
    if not 0.0 <= weight <= 1.0:
        raise InputError(f"the text weight must be between 0 and 1, got {weight}")
    if text is None and image is None:
        raise InputError("a search needs a text, an image, or both")
    if text is None:
        return l2_normalize(image.reshape(1, -1))[0]
    if image is None:
        return l2_normalize(text.reshape(1, -1))[0]
    return l2_normalize((weight * text + (1.0 - weight) * image).reshape(1, -1))[0]


__all__ = ["Match", "VectorMatrix", "combine_queries"]
