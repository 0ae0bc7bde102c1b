"""Differential tests against OpenCLIP's own SimpleTokenizer (the reference), on random tricky strings,
special-token literals and every code point; skipped where open_clip_torch is not installed (device installs).

OpenCLIP splits text with the installed `regex`, whose Unicode version can be newer than the one edgeclip's
class table was built from. The comparisons use only code points that both classify alike; the others are
named, with both versions, by `test_installed_regex_classifies_code_points_like_the_shipped_table`.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from edgeclip.tokenizer.build import describe_drift, differing_code_points
from edgeclip.tokenizer.pretokenize import compile_pattern, shipped_classes
from tests.tokenizer.tricky import PIECES


@pytest.fixture(scope="module")
def reference():
    tokenizer = pytest.importorskip("open_clip.tokenizer", reason="open_clip_torch (the reference tokenizer) is not installed")
    return tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def drift(installed_classes) -> frozenset:
    """Code points the installed `regex` classifies differently from the shipped table (new Unicode assignments)."""
    return frozenset(differing_code_points(shipped_classes(), installed_classes))


def test_installed_regex_classifies_code_points_like_the_shipped_table(installed_classes):
    """Same Unicode version: every code point alike. Another version: the differing code points are named."""
    shipped = shipped_classes()
    if not differing_code_points(shipped, installed_classes):
        return
    report = describe_drift(shipped, installed_classes)
    assert installed_classes["unicode_version"] != shipped["unicode_version"], f"same Unicode version, yet {report}"
    pytest.skip(f"left out of the OpenCLIP comparisons (edgeclip's ids follow its table there; OpenCLIP's follow "
                f"the installed regex): {report}")


def _random_texts(seed: int, n: int, excluded: frozenset) -> list[str]:
    rng = random.Random(seed)
    texts = []
    while len(texts) < n:
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.5:
                parts.append(rng.choice(PIECES))
            else:
                top = 0x3000 if r < 0.8 else 0x10FFFF
                cp = rng.randint(0x20, top)
                if not 0xD800 <= cp < 0xE000 and cp not in excluded:
                    parts.append(chr(cp))
        texts.append("".join(parts))
    return texts


@pytest.mark.parametrize("seed", [0, 1])
def test_random_tricky_strings_match_openclip(reference, tok, drift, seed):
    texts = _random_texts(seed, 600, drift)
    expected = reference(texts).numpy()
    got = tok(texts)
    wrong = [texts[i] for i in np.where((got != expected).any(axis=1))[0]]
    assert not wrong, f"{tok.backend}: {len(wrong)} texts differ from OpenCLIP, e.g. {wrong[:3]!r}"


@pytest.mark.parametrize("text", [
    "<start_of_text>", "a <end_of_text> b", "x<start_of_text>y", "!<start_of_text>", "<<end_of_text>>",
    "<START_OF_TEXT> shouted", "<ſtart_of_text> long s", "it'ſ", "'S and 'LL", "<start_of_<end_of_text>",
    "word " * 80 + "<end_of_text>", "\u0345alone", "ok\u0345ok",
])
def test_special_literals_and_case_folding_match_openclip(reference, tok, text):
    np.testing.assert_array_equal(tok(text), reference(text).numpy())


def test_long_texts_match_openclip(reference, tok):
    rng = random.Random(3)
    texts = [" ".join(rng.choice(["cat", "Dog!", "naïve", "&amp;", "2024", "东京"]) for _ in range(n)) for n in (75, 76, 77, 5000)]
    texts.append("abcdefghij" * 40)  # one 400-letter word: the long-word path
    np.testing.assert_array_equal(tok(texts), reference(texts).numpy())


def _code_point_sweep(reference, drift: frozenset, step: int) -> None:
    """Code points (all below U+3000, every `step`-th above), alone between spaces and glued to letters and
    digits, are split identically by OpenCLIP's pattern (installed `regex`) and edgeclip's (shipped table)."""
    points = [*range(0x3000), *range(0x3000, 0x110000, step)]
    chars = [chr(cp) for cp in points if not 0xD800 <= cp < 0xE000 and cp not in drift]
    ours = compile_pattern(("<start_of_text>", "<end_of_text>"))
    for text in (" ".join(chars), "a".join(chars), "1".join(chars)):
        assert reference.pat.findall(text) == ours.findall(text)


def test_pattern_splits_sampled_code_points_like_openclip(reference, drift):
    _code_point_sweep(reference, drift, step=97)


@pytest.mark.slow
def test_pattern_splits_every_code_point_like_openclip(reference, drift):
    _code_point_sweep(reference, drift, step=1)
