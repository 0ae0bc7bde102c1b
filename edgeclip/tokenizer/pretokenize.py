"""OpenCLIP's pre-tokenizer regex, spelled out as explicit code point ranges from edgeclip's own class table.

OpenCLIP compiles its pattern case-insensitively with `regex`, so its splits follow the Unicode tables of
whatever `regex` release is installed. edgeclip's pattern instead lists, as code point ranges, what each part
of that pattern matches in the Unicode version recorded in `edgeclip/data/unicode_classes.json` (made by
`edgeclip.tokenizer.build`) and needs no flags: stdlib `re` (pure-Python backend) and HF `tokenizers`
(Oniguruma) split every text identically, whichever `regex`, `tokenizers` or Python is installed.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Pattern, Union

from edgeclip.tokenizer.constants import CONTRACTIONS

CLASSES_FILE = Path(__file__).resolve().parent.parent / "data" / "unicode_classes.json"
# How one code point is written inside a character class: Python `re` vs Oniguruma (HF tokenizers).
CODE_POINT = {"python": "\\U{:08x}", "onig": "\\x{{{:x}}}"}


def compile_pattern(specials: tuple[str, ...]) -> Pattern:
    """The compiled pre-tokenizer (stdlib `re`, explicit classes from the shipped table)."""
    return re.compile(explicit_pattern(specials, "python"))


@lru_cache(maxsize=4)
def explicit_pattern(specials: tuple[str, ...], syntax: str) -> str:
    """OpenCLIP's pattern without flags or \\p classes, in `syntax` "python" (stdlib re) or "onig"."""
    table = shipped_classes()
    point = CODE_POINT[syntax].format

    def body(ranges: list[list[int]]) -> str:
        return "".join(point(a) if a == b else f"{point(a)}-{point(b)}" for a, b in ranges)

    def literal(text: str) -> str:
        variants = table["case_variants"]
        return "".join(
            f"[{''.join(point(cp) for cp in variants[ch])}]" if ch in variants else re.escape(ch) for ch in text.lower()
        )

    alts = [literal(s) for s in (*specials, *CONTRACTIONS)]
    alts += [f"[{body(table['letters'])}]+", f"[{body(table['numbers'])}]", f"[{body(table['other'])}]+"]
    return "|".join(alts)


@lru_cache(maxsize=1)
def shipped_classes() -> dict:
    """The shipped class table (source, unicode_version, assigned, letters, numbers, other, case_variants), read once."""
    return json.loads(CLASSES_FILE.read_text(encoding="utf-8"))


def first_pretokens(pattern: Pattern, text: str, n: int) -> str:
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


def split_specials(pattern: Pattern, text: str, special_ids: dict[str, int]) -> list[Union[str, int]]:
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
