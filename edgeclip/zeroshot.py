"""Zero-shot helpers: cosine similarity, CLIP-style prompt templates and a cache of label embeddings."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgeclip.errors import InputError, TextError
from edgeclip.preprocess import is_single_image

# Generic photo prompts in the style of CLIP's zero-shot evaluation; "{}" is replaced by the label.
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a close-up photo of a {}.",
    "a blurry photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a cropped photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a drawing of a {}.",
    "a picture of one {}.",
)
DEFAULT_LOGIT_SCALE = 100.0  # CLIP's trained temperature saturates at 100; used when the manifest has none


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{name} must be a [D] or [N, D] array of embeddings, got shape {arr.shape}")
    return arr


def l2_normalize(x: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as `dtype` (float64 for metrics)."""
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, x.dtype.type(1e-12))


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix [Na, Nb] between two sets of embeddings ([D] or [N, D] each)."""
    a2, b2 = _as_matrix(a, "a"), _as_matrix(b, "b")
    if a2.shape[1] != b2.shape[1]:
        raise InputError(f"embedding sizes differ: {a2.shape[1]} vs {b2.shape[1]}")
    return l2_normalize(a2) @ l2_normalize(b2).T


def normalize_labels(labels: Sequence[str], templates: Optional[Sequence[str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate labels and templates; returns them as tuples (the cache key)."""
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)) or not labels:
        raise TextError("labels must be a non-empty list of strings")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise TextError(f"label {i} is empty or not a string: {label!r}")
    if templates is None:
        templates = DEFAULT_TEMPLATES
    if isinstance(templates, str):
        templates = [templates]
    if not templates:
        raise TextError("templates must be a non-empty list such as ['a photo of a {}.']")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise TextError(f"template {t!r} must be a string with exactly one '{{}}' for the label")
    return tuple(labels), tuple(templates)


class LabelBank:
    """Label embeddings (mean of the normalized template embeddings, renormalized), cached per (labels, templates)."""

    def __init__(self, encode_text: Callable[[list[str]], np.ndarray], max_entries: int = 32):
        self._encode_text = encode_text
        self._max = max_entries
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, labels: Sequence[str], templates: Optional[Sequence[str]] = None) -> np.ndarray:
        key = normalize_labels(labels, templates)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        labels_t, templates_t = key
        prompts = [t.format(label) for label in labels_t for t in templates_t]
        emb = self._encode_text(prompts).reshape(len(labels_t), len(templates_t), -1)
        bank = l2_normalize(l2_normalize(emb).mean(axis=1))
        bank.setflags(write=False)
        with self._lock:
            self._cache[key] = bank
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return bank


def check_top_k(top_k: object) -> Optional[int]:
    """`top_k` if it is None (every label) or a positive integer; else InputError naming the value."""
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise InputError(f"top_k must be a positive integer (labels to return per image) or None, got {top_k!r}")
    return top_k


def rank_labels(image_emb: np.ndarray, bank: np.ndarray, labels: Sequence[str], logit_scale: float,
                top_k: Optional[int]) -> list[list[tuple[str, float]]]:
    """Per image: [(label, probability)] sorted best first, probabilities = softmax(logit_scale * cosine)."""
    logits = logit_scale * similarity(image_emb, bank)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    k = len(labels) if check_top_k(top_k) is None else min(top_k, len(labels))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(labels[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def classify(encoder: Any, images: Any, labels: Sequence[str], templates: Optional[Sequence[str]] = None,
             top_k: Optional[int] = None) -> list:
    """Zero-shot classify with an Encoder: one image -> [(label, prob)] best first; a list -> one such list per image."""
    check_top_k(top_k)
    bank = encoder.label_embeddings(labels, templates)
    ranked = rank_labels(encoder.encode_image(images), bank, list(labels), encoder.logit_scale, top_k)
    return ranked[0] if is_single_image(images) else ranked


__all__ = [
    "DEFAULT_LOGIT_SCALE", "DEFAULT_TEMPLATES", "LabelBank", "check_top_k", "classify", "l2_normalize", "normalize_labels",
    "rank_labels", "similarity",
]
