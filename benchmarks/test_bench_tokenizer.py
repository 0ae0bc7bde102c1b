"""Tokenizer throughput: 10,000 deterministic captions through each backend (marker `bench`).

Run: `python -m pytest -m bench benchmarks/test_bench_tokenizer.py`; captions/s = 10,000 / mean time.
"""
from __future__ import annotations

import random

import pytest

from edgeclip.tokenizer import load_tokenizer

pytestmark = pytest.mark.bench

N_CAPTIONS = 10_000
SUBJECTS = ["a dog", "two cats", "an old man", "a red car", "the Eiffel Tower", "a bowl of phở", "a child's kite",
            "three zebras", "a café terrace", "a snow-covered mountain", "東京タワー", "a 1960s TV"]
ACTIONS = ["sitting on", "running across", "parked next to", "photographed above", "painted near", "hiding under"]
PLACES = ["a wooden bench", "the beach at sunset", "a busy street", "a field of sunflowers", "the kitchen table",
          "a rainy city (2019)", "an empty parking lot", "a frozen lake"]
STYLES = ["", "a photo of ", "a close-up photo of ", "a blurry picture of ", "a drawing of "]


def make_captions(n: int = N_CAPTIONS, seed: int = 0) -> list[str]:
    """Deterministic, varied captions (mixed case, punctuation, digits, some non-ASCII)."""
    rng = random.Random(seed)
    return [f"{rng.choice(STYLES)}{rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}, #{rng.randint(1, 999)}!"
            for _ in range(n)]


@pytest.mark.parametrize("backend", ["hf", "python"])
def test_bench_tokenize_10k_captions(benchmark, backend):
    if backend == "hf":
        pytest.importorskip("tokenizers", reason="the HF backend needs the `tokenizers` package")
    captions = make_captions()
    tok = load_tokenizer(backend=backend)
    ids = benchmark.pedantic(tok, args=(captions,), rounds=3, iterations=1, warmup_rounds=0)
    assert ids.shape == (N_CAPTIONS, 77)
    benchmark.extra_info["captions"] = N_CAPTIONS
    benchmark.extra_info["captions_per_s"] = round(N_CAPTIONS / benchmark.stats.stats.mean, 1)
