"""Readers for the reference fixtures in tests/reference: the weight rule, the test images and the parity checks.

Shared by every test that compares against the reference implementations (see that folder's README).
"""
from __future__ import annotations

import json
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

# fixture file stem -> (canonical model id, checkpoint layout)
FIXTURES = {
    "mobileclip-s0.ml-mobileclip": ("mobileclip-s0", "ml-mobileclip"),
    "mobileclip-s1.ml-mobileclip": ("mobileclip-s1", "ml-mobileclip"),
    "mobileclip-s2.ml-mobileclip": ("mobileclip-s2", "ml-mobileclip"),
    "mobileclip-b.ml-mobileclip": ("mobileclip-b", "ml-mobileclip"),
    "MobileCLIP-S1.open_clip": ("mobileclip-s1", "open_clip"),
    "MobileCLIP-S2.open_clip": ("mobileclip-s2", "open_clip"),
    "MobileCLIP-B.open_clip": ("mobileclip-b", "open_clip"),
    "MobileCLIP2-S0.open_clip": ("mobileclip2-s0", "open_clip"),
    "MobileCLIP2-S2.open_clip": ("mobileclip2-s2", "open_clip"),
    "MobileCLIP2-B.open_clip": ("mobileclip2-b", "open_clip"),
}
LARGE = {"mobileclip-b", "mobileclip2-b"}  # ViT-B towers: behind the `slow` marker


@lru_cache(maxsize=None)
def load_fixture(stem: str) -> dict:
    """Parse one `<model>.<format>.json` fixture."""
    return json.loads((REFERENCE_DIR / f"{stem}.json").read_text())


def rule_array(key: str, shape: list[int], dtype: str) -> np.ndarray:
    """The README's deterministic value for one state_dict entry."""
    shape = tuple(shape)
    n = int(np.prod(shape)) if shape else 1
    if "int" in dtype:
        return np.zeros(shape, dtype=np.int64)
    h = zlib.crc32(key.encode("utf-8")) % 1000
    base = np.sin(np.arange(n, dtype=np.float64) * 0.618 + h)
    if key.endswith("running_var"):
        v = 1 + 0.5 * base**2
    elif key.endswith("running_mean"):
        v = 0.1 * base
    elif len(shape) <= 1 and key.endswith("weight"):
        v = 1 + 0.1 * base
    elif len(shape) <= 1:
        v = 0.02 * base
    elif int(np.prod(shape[1:])) == 1:
        v = 0.1 * base
    elif len(shape) >= 3:
        v = 2 * base / np.sqrt(np.prod(shape[1:]))
    else:
        v = base / np.sqrt(np.prod(shape[1:]))
    return v.astype(np.float32).reshape(shape)


def fixture_state_dict(fx: dict) -> dict:
    """The checkpoint-layout state_dict (torch tensors) that the fixture's embeddings were computed from."""
    import torch

    return {key: torch.from_numpy(rule_array(key, shape, dtype)) for key, shape, dtype in fx["state_dict"]}


def fixture_images(fx: dict) -> np.ndarray:
    """The two [3, S, S] test images of the README, float32, already in model input space."""
    s = fx["image_size"]
    c, h, w = np.meshgrid(np.arange(3), np.arange(s), np.arange(s), indexing="ij")
    idx = (c * s * s + h * s + w).astype(np.float64)
    out = [0.5 + 0.5 * np.sin(0.001 * (1 + k) * idx + 0.3 * c + k) for k in range(2)]
    return np.stack(out).astype(np.float32)


def fixture_tokens(fx: dict) -> np.ndarray:
    """The captions' token ids, int64 [n, 77]."""
    return np.asarray(fx["tokens"], dtype=np.int64)


def parity(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(minimum row cosine, relative L2 error of the whole block)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    cos = (a * e).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(e, axis=1))
    rel = np.linalg.norm(a - e) / np.linalg.norm(e)
    return float(cos.min()), float(rel)


def assert_parity(actual: np.ndarray, expected: np.ndarray, what: str, row_difference: bool = False) -> None:
    """README tolerance: cosine >= 0.99999 and relative L2 <= 1e-4; optionally the row difference (cos >= 0.999)."""
    cos, rel = parity(actual, expected)
    assert cos >= 0.99999 and rel <= 1e-4, f"{what}: min cosine {cos:.7f}, relative L2 {rel:.2e}"
    if row_difference:
        d_cos, _ = parity(actual[1:2] - actual[0:1], np.asarray(expected)[1:2] - np.asarray(expected)[0:1])
        assert d_cos >= 0.999, f"{what}: image-row difference cosine {d_cos:.6f}"
