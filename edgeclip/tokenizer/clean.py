"""Text cleaning exactly as OpenCLIP does it before tokenizing: ftfy, html-unescape twice, collapse whitespace, lower()."""
from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Union

import ftfy

from edgeclip.tokenizer.errors import TokenizerInputError


PREFIX_START = 4096  # characters; longer multi-line texts are cleaned a growing prefix of whole lines at a time


def clean_text(text: str) -> str:
    """The string OpenCLIP's 'lower' cleaner hands to its pre-tokenizer."""
    return _finish(ftfy.fix_text(text))


def _finish(fixed: str) -> str:
    """The steps after ftfy: html-unescape twice, collapse whitespace, Python's lower()."""
    return " ".join(html.unescape(html.unescape(fixed)).split()).lower()


def clean_words(text: str, n_words: int) -> str:
    """A cleaned text whose first `n_words` words are those of `clean_text(text)` (all of it when it is shorter).

    ftfy fixes each line on its own, no html entity spans a line break and no word spans a space, so a prefix
    ending at a line break cleans to a word-prefix of the whole: a long document costs only the lines needed.
    """
    end = PREFIX_START
    while end < len(text):
        newline = text.find("\n", end)
        if newline < 0:
            break
        fixed = ftfy.fix_text(text[: newline + 1])
        if fixed.endswith("\n"):
            cleaned = _finish(fixed)
            if cleaned.count(" ") >= n_words:
                return cleaned
        end = 4 * (newline + 1)
    return clean_text(text)


def as_text_list(texts: Union[str, Iterable[str]]) -> list[str]:
    """A list of strings from one string or an iterable of strings; anything else is a TokenizerInputError."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise TokenizerInputError("texts must be str or a list of str, got bytes; decode them first (e.g. .decode('utf-8'))")
    try:
        items = list(texts)
    except TypeError:
        raise TokenizerInputError(f"texts must be str or a list of str, got {type(texts).__name__}") from None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TokenizerInputError(f"texts[{i}] is {type(item).__name__}, not str: {item!r:.60}")
    return items
