"""The two encoders behind `load_tokenizer`: HF `tokenizers` (fast, Rust) and pure Python (always available).

Both take texts already cleaned (`edgeclip.tokenizer.clean`) and return, per text, at least the first `budget`
token ids (without start/end tokens). Special-token literals count only where OpenCLIP's regex finds them;
`pattern` is that regex as edgeclip spells it (`edgeclip.tokenizer.pretokenize.compile_pattern`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Pattern

from edgeclip.tokenizer.bpe import BytePairEncoder
from edgeclip.tokenizer.pretokenize import explicit_pattern, first_pretokens, split_specials
from edgeclip.tokenizer.tokenizer_file import TokenizerSpec


class PythonBackend:
    """OpenCLIP's algorithm in plain Python: the pre-tokenizer `pattern`, then byte-level BPE word by word."""

    name = "python"

    def __init__(self, spec: TokenizerSpec, pattern: Pattern):
        self._pattern = pattern
        self._special_ids = {name: spec.vocab[name] for name in spec.specials}
        self._bpe = BytePairEncoder(spec.vocab, spec.merges, spec.document["model"]["end_of_word_suffix"])

    def encode(self, texts: list[str], budget: int) -> list[list[int]]:
        """Ids of each text, stopping once `budget` ids are known (the rest would be truncated away)."""
        return [self._encode_one(text, budget) for text in texts]

    def _encode_one(self, text: str, budget: int) -> list[int]:
        ids: list[int] = []
        for match in self._pattern.finditer(text):
            word = match.group()
            special = self._special_ids.get(word)
            if special is not None:
                ids.append(special)
            else:
                ids.extend(self._bpe.encode_word(word, budget - len(ids)))
            if len(ids) >= budget:
                break
        return ids


class HFBackend:
    """HF `tokenizers` BPE on pre-cleaned text.

    The file's vocabulary and merges are used as they are; its normalizer, added tokens and post-processing
    are dropped (edgeclip cleans, adds start/end and pads itself) and its pre-tokenizer is replaced by the
    exact explicit-class pattern, so splitting does not depend on Oniguruma's Unicode tables.
    """

    name = "hf"

    def __init__(self, tok, special_ids: dict[str, int], pattern: Pattern):
        self._tok = tok
        self._special_ids = special_ids
        self._pattern = pattern

    @classmethod
    def from_spec(cls, spec: TokenizerSpec, pattern: Pattern) -> "HFBackend":
        """Built from a checked tokenizer.json."""
        from tokenizers import Tokenizer

        split = {"type": "Split", "pattern": {"Regex": explicit_pattern(spec.specials, "onig")},
                 "behavior": "Removed", "invert": True}
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
        doc = dict(spec.document, normalizer=None, post_processor=None, added_tokens=[], truncation=None, padding=None,
                   pre_tokenizer={"type": "Sequence", "pretokenizers": [split, byte_level]})
        return cls(Tokenizer.from_str(json.dumps(doc)), {name: spec.vocab[name] for name in spec.specials}, pattern)

    @classmethod
    def load(cls, path: Path, special_ids: dict[str, int], pattern: Pattern) -> "HFBackend":
        """Loaded from a file written by `save` (edgeclip.tokenizer.hf_cache)."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)), special_ids, pattern)

    def save(self, path: Path) -> None:
        """Write the Rust tokenizer as it runs here (what `load` reads back)."""
        self._tok.save(str(path), pretty=False)

    def encode(self, texts: list[str], budget: int) -> list[list[int]]:
        """Ids of each text; long texts are first cut after `budget` pre-tokens (Rust has no early stop)."""
        texts = [first_pretokens(self._pattern, t, budget) if len(t) > budget else t for t in texts]
        encoded = [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]
        for i, text in enumerate(texts):
            if any(name in text for name in self._special_ids):
                encoded[i] = self._encode_with_specials(text)
        return encoded

    def _encode_with_specials(self, text: str) -> list[int]:
        """Rare path: a literal special token in the text. Split where OpenCLIP's regex sees it, encode the rest."""
        ids: list[int] = []
        for piece in split_specials(self._pattern, text, self._special_ids):
            ids += self._tok.encode(piece, add_special_tokens=False).ids if isinstance(piece, str) else [piece]
        return ids
