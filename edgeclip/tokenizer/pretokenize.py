"""OpenCLIP's pre-tokenizer regex, with the `regex` package when present and an exact stdlib-`re` twin otherwise.

OpenCLIP compiles its pattern case-insensitively with `regex`. The twin spells out, as explicit code point
ranges, what each part of that pattern matches (table `edgeclip/data/unicode_classes.json`, made from
`regex` by `edgeclip.tokenizer.build`) and needs no flags, so stdlib `re` and HF `tokenizers` (Oniguruma)
split text exactly as OpenCLIP does, independent of their own Unicode tables.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Pattern, Union

from edgeclip.tokenizer.constants import CONTRACTIONS, split_pattern

CLASSES_FILE = Path(__file__).resolve().parent.parent / "data" / "unicode_classes.json"
# How one code point is written inside a character class: Python `re` vs Oniguruma (HF tokenizers).
CODE_POINT = {"python": "\\U{:08x}", "onig": "\\x{{{:x}}}"}


def compile_pattern(specials: tuple[str, ...], use_regex: bool = True) -> Splitter:
    """The compiled pre-tokenizer; `use_regex=False` forces the stdlib path even when `regex` is installed."""
    if use_regex:
        try:
            import regex
        except ImportError:
            pass
        else:
            return regex.compile(split_pattern(r"\p{L}", r"\p{N}", specials))
    return re.compile(explicit_pattern(specials, "python"))


class StdlibPattern:
    """The stdlib-`re` twin of OpenCLIP's pattern, with a small ASCII-only twin for all-ASCII text (much faster
    in `re`, whose matching of huge Unicode classes is slow; on ASCII text both twins match the same)."""

    def __init__(self, specials: tuple[str, ...]):
        self._full = re.compile(explicit_pattern(specials, "python"))
        self._ascii = re.compile(explicit_pattern(specials, "python", limit=0x80))

    def finditer(self, text: str) -> Iterator[re.Match]:
        return (self._ascii if text.isascii() else self._full).finditer(text)

    def findall(self, text: str) -> list[str]:
        return (self._ascii if text.isascii() else self._full).findall(text)


Splitter = Union[Pattern, StdlibPattern]  # anything with OpenCLIP's finditer/findall


@lru_cache(maxsize=4)
def explicit_pattern(specials: tuple[str, ...], syntax: str, limit: int = 0x110000) -> str:
    """OpenCLIP's pattern without flags or \\p classes, in `syntax` "python" (stdlib re) or "onig".

    With `limit`, classes keep only code points below it (the pattern is then valid for such text only).
    """
    table = _classes()
    point = CODE_POINT[syntax].format

    def body(ranges: list[list[int]]) -> str:
        kept = [(a, min(b, limit - 1)) for a, b in ranges if a < limit]
        return "".join(point(a) if a == b else f"{point(a)}-{point(b)}" for a, b in kept)

    def literal(text: str) -> str:
        variants = table["case_variants"]
        return "".join(
            f"[{''.join(point(cp) for cp in variants[ch] if cp < limit)}]" if ch in variants else re.escape(ch)
            for ch in text.lower()
        )

    alts = [literal(s) for s in (*specials, *CONTRACTIONS)]
    alts += [f"[{body(table['letters'])}]+", f"[{body(table['numbers'])}]", f"[{body(table['other'])}]+"]
    return "|".join(alts)


@lru_cache(maxsize=1)
def _classes() -> dict:
    """The shipped class table, read once per process."""
    return json.loads(CLASSES_FILE.read_text(encoding="utf-8"))


def first_pretokens(pattern: Splitter, text: str, n: int) -> str:
    """`text` up to the end of its `n`-th pre-token. Each pre-token gives at least one id and the matches before
    the cut are the same in the cut text, so the first `n` ids are unchanged while huge texts stay cheap."""
    if n <= 0:
        return ""
    end = len(text)
    for count, match in enumerate(pattern.finditer(text), start=1):
        if count == n:
            end = match.end()
            break
    return text[:end]


def split_specials(pattern: Splitter, text: str, special_ids: dict[str, int]) -> list[Union[str, int]]:
    """`text` cut around the special tokens the pre-tokenizer matches as such: text pieces and special ids, in order."""
    pieces: list[Union[str, int]] = []
    start = 0
    for match in pattern.finditer(text):
        special = special_ids.get(match.group())
        if special is not None:
            pieces += [text[start : match.start()], special]
            start = match.end()
    pieces.append(text[start:])
    return pieces
