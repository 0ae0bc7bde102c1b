"""Huge inputs: the early cuts (lines, words, pre-tokens, word pieces) never change ids, and both backends agree."""
from __future__ import annotations

import random

import numpy as np
import pytest

from edgeclip.tokenizer.bpe import BytePairEncoder
from edgeclip.tokenizer.clean import clean_text, clean_words
from edgeclip.tokenizer.tokenizer_file import read_tokenizer_json, tokenizer_json_path

RNG = random.Random(7)
MB = 1_000_000


def _words(n: int) -> str:
    return " ".join(RNG.choice(["cat", "Dog", "photo", "of", "the", "zebra", "naïve", "&amp;", "2024"]) for _ in range(n))


HUGE = {
    "1MB of words": _words(MB // 6),
    "1MB of lines with mojibake and entities": "\n".join(f"line {i} &amp;amp; Ã©tÃ© <b>" for i in range(MB // 28)),
    "1MB single random word": "".join(RNG.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(MB)),
    "1MB single repeated letter": "x" * MB,
    "1MB of digits": "7" * MB,
}


@pytest.fixture(scope="module")
def bpe() -> BytePairEncoder:
    spec = read_tokenizer_json(tokenizer_json_path())
    return BytePairEncoder(spec.vocab, spec.merges, "</w>")


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_inputs_agree_across_backends(both_backends, name):
    """hf against the pure-Python path (they share only the cleaning and the pre-tokenizer table)."""
    hf = both_backends["hf"](HUGE[name])
    np.testing.assert_array_equal(both_backends["python"](HUGE[name]), hf, err_msg=name)
    assert hf[0, -1] == 49407, "a text longer than the context must end with the end token"


def test_line_prefix_cleaning_equals_full_cleaning():
    text = "\n".join(f"Line {i}: &amp;lt;b&amp;gt; Ã©tÃ© ΣΑΣ\r\n\t café" for i in range(800))
    full = clean_text(text).split(" ")
    for n in (1, 75, 2000, 9000):
        assert clean_words(text, n).split(" ")[:n] == full[:n]


def test_lines_after_an_html_tag_are_cleaned_like_ftfy_does():
    """ftfy stops unescaping html in every line after the first '<'; the line-by-line prefix must keep that state."""
    text = "\n".join(["&amp;amp;eacute;"] * 600 + ["<p>"] + ["&amp;amp;eacute;"] * 600)
    full = clean_text(text).split(" ")
    assert full[0] == "é" and full[-1] == "&eacute;", "the fixture no longer shows ftfy's html state"
    for n in (599, 601, 900, 1300):
        assert clean_words(text, n).split(" ")[:n] == full[:n]


@pytest.mark.parametrize("seed", range(5))
def test_long_word_path_equals_plain_merge_loop(bpe, seed):
    """Piece splitting, capped passes and the heap give the ids of OpenCLIP's plain loop on the whole word."""
    rng = random.Random(seed)
    alphabets = ["abcdefghijklmnopqrstuvwxyz", "ab", "xyz!", "thequickbrownfox", "éàü"]
    for _ in range(10):
        chars = "".join(rng.choice(alphabets[seed % len(alphabets)]) for _ in range(rng.randint(49, 800)))
        word = "".join(map(bpe._byte_chars.__getitem__, chars.encode("utf-8")))
        plain, finished = bpe._merge_passes([*word[:-1], word[-1] + "</w>"])
        assert finished
        assert bpe.encode_word(chars, budget=10**9) == [bpe.vocab[s] for s in plain]
