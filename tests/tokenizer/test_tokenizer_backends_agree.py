"""What "identical ids" means, independent of anyone's release: the pure-Python backend gives exactly the ids of
the HF `tokenizers` backend, on the golden set and on generated strings over every code point (assigned or not,
in any Unicode version), because both split text with the same shipped class table."""
from __future__ import annotations

import random

import numpy as np
import pytest

from tests.tokenizer.tricky import PIECES


def _generated(seed: int, n: int) -> list[str]:
    """Texts mixing tricky pieces, code points from the whole range (unassigned ones included) and long words."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 16)):
            r = rng.random()
            if r < 0.4:
                parts.append(rng.choice(PIECES))
            elif r < 0.95:
                cp = rng.randint(0, 0x3000 if r < 0.7 else 0x10FFFF)
                parts.append(chr(cp) if not 0xD800 <= cp < 0xE000 else " ")
            else:
                parts.append("".join(rng.choice("abcxyzé1") for _ in range(rng.randint(40, 200))))
        texts.append("".join(parts))
    return texts


@pytest.fixture(scope="module")
def both(both_backends):
    return both_backends["python"], both_backends["hf"]


def test_python_equals_hf_on_the_golden_set(both, golden):
    python, hf = both
    texts = [case["text"] for case in golden]
    np.testing.assert_array_equal(python(texts), hf(texts))


@pytest.mark.parametrize("seed", range(3))
def test_python_equals_hf_on_generated_strings(both, seed):
    python, hf = both
    texts = _generated(seed, 400)
    got, want = python(texts), hf(texts)
    wrong = [texts[i] for i in np.where((got != want).any(axis=1))[0]]
    assert not wrong, f"{len(wrong)} of {len(texts)} texts differ between the backends, e.g. {wrong[:3]!r}"


def test_python_equals_hf_at_other_context_lengths(both):
    python, hf = both
    texts = _generated(9, 100)
    for ctx in (2, 16, 200):
        np.testing.assert_array_equal(python(texts, context_length=ctx), hf(texts, context_length=ctx))
