"""Read and check a CLIP tokenizer.json (HF `tokenizers` format); the shipped one is `tokenizer_json_path()`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from edgeclip.tokenizer.constants import EOT_TOKEN, EOW, SOT_TOKEN
from edgeclip.tokenizer.errors import TokenizerError

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "clip_tokenizer.json"
# Names a CLIP tokenizer.json may give its start/end tokens: OpenCLIP's, then OpenAI's / HF's.
SPECIAL_NAMES = ((SOT_TOKEN, EOT_TOKEN), ("<|startoftext|>", "<|endoftext|>"))


def tokenizer_json_path() -> Path:
    """The CLIP tokenizer.json shipped inside edgeclip (export copies it into bundles)."""
    return SHIPPED


@dataclass(frozen=True)
class TokenizerSpec:
    """What both backends need from a tokenizer.json: the parsed document, vocabulary, merges and special tokens."""

    path: Path
    document: dict
    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    specials: tuple[str, str]  # (start, end) token names as spelled in this file

    @property
    def sot_id(self) -> int:
        return self.vocab[self.specials[0]]

    @property
    def eot_id(self) -> int:
        return self.vocab[self.specials[1]]


def read_tokenizer_json(path: Union[str, Path]) -> TokenizerSpec:
    """Parse `path` and check it is a CLIP-style BPE tokenizer (byte-level, `</w>` word suffix, start/end tokens)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"cannot read tokenizer file {path}: {exc}") from None
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise TokenizerError(f"{path} is not a BPE tokenizer.json (no model.vocab of type BPE)")
    if model.get("end_of_word_suffix") != EOW:
        raise TokenizerError(f"{path} is not a CLIP tokenizer: model.end_of_word_suffix must be {EOW!r}")
    vocab = model["vocab"]
    merges = _merge_pairs(model.get("merges", []), path)
    specials = next((names for names in SPECIAL_NAMES if all(n in vocab for n in names)), None)
    if specials is None:
        raise TokenizerError(f"{path} has no start/end tokens ({SOT_TOKEN!r}/{EOT_TOKEN!r}) in its vocabulary")
    missing = sorted({a + b for a, b in merges} - vocab.keys())[:3]
    if missing:
        raise TokenizerError(f"{path}: merges produce tokens missing from the vocabulary, e.g. {missing}")
    return TokenizerSpec(path, doc, vocab, merges, specials)


def _merge_pairs(merges: object, path: Path) -> list[tuple[str, str]]:
    """Merges written as "a b" (classic) or ["a", "b"] (tokenizers >= 0.20), as (a, b) pairs.

    Split and checked in bulk (48,894 merges: 0.12 s one call per merge, a few ms here); the first malformed
    entry is named."""
    if not isinstance(merges, list):
        raise TokenizerError(f"{path}: model.merges must be a list, not {type(merges).__name__}")
    if all(type(m) is str for m in merges):
        pairs = [m.split(" ") for m in merges]
        if all(len(p) == 2 for p in pairs):
            return list(map(tuple, pairs))
    elif all(type(m) is list and len(m) == 2 and type(m[0]) is str and type(m[1]) is str for m in merges):
        return list(map(tuple, merges))
    for merge in merges:
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise TokenizerError(f"{path}: malformed merge entry {merge!r}")
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]  # both spellings mixed
