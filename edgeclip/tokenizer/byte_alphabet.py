"""CLIP's byte-level alphabet: every UTF-8 byte maps to one printable character, so BPE never sees raw bytes."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _byte_order() -> tuple[tuple[int, str], ...]:
    """(byte, character) pairs in CLIP's vocabulary order: printable Latin-1 bytes as themselves, then the rest at 256+."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    kept = set(keep)
    shifted = [b for b in range(256) if b not in kept]
    return tuple([(b, chr(b)) for b in keep] + [(b, chr(256 + n)) for n, b in enumerate(shifted)])


@lru_cache(maxsize=1)
def byte_to_char() -> tuple[str, ...]:
    """The character that stands for each byte value 0..255."""
    table = dict(_byte_order())
    return tuple(table[b] for b in range(256))


def base_alphabet() -> list[str]:
    """The 256 base symbols in the order CLIP numbers them (ids 0..255)."""
    return [char for _, char in _byte_order()]
