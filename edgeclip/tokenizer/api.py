"""`load_tokenizer`: OpenCLIP-exact CLIP tokenization to int64 [N, context_length] arrays, HF or pure-Python backend."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Optional, Union

import numpy as np

from edgeclip.tokenizer.backends import HFBackend, PythonBackend
from edgeclip.tokenizer.clean import as_text_list, clean_words
from edgeclip.tokenizer.constants import CONTEXT_LENGTH, PAD_ID
from edgeclip.tokenizer.errors import TokenizerError
from edgeclip.tokenizer.pretokenize import compile_pattern
from edgeclip.tokenizer.tokenizer_file import read_tokenizer_json, tokenizer_json_path

log = logging.getLogger(__name__)
BACKENDS = ("auto", "hf", "python")


class ClipTokenizer:
    """Callable CLIP tokenizer: `tok(texts) -> np.int64 [N, context_length]` (start, ids, end, zero padding)."""

    def __init__(self, backend: Union[HFBackend, PythonBackend], context_length: int, sot_id: int, eot_id: int,
                 path: Path):
        self._backend = backend
        self.context_length = context_length
        self.sot_id = sot_id
        self.eot_id = eot_id
        self.pad_id = PAD_ID
        self.path = path

    @property
    def backend(self) -> str:
        """"hf" or "python": which encoder runs."""
        return self._backend.name

    def __call__(self, texts: Union[str, Iterable[str]], context_length: Optional[int] = None) -> np.ndarray:
        """Token ids of one text or a list; text longer than the context is cut and ends with the end token.

        context_length overrides the tokenizer's own for this call (as OpenCLIP's tokenizer allows).
        """
        ctx = self.context_length if context_length is None else _check_context_length(context_length)
        items = as_text_list(texts)
        keep = ctx - 2  # room between the start and end tokens
        cleaned = [clean_words(t, keep) for t in items]
        out = np.full((len(items), ctx), self.pad_id, dtype=np.int64)
        for row, ids in enumerate(self._backend.encode(cleaned, keep)):
            ids = ids[:keep]
            out[row, 0] = self.sot_id
            out[row, 1 : 1 + len(ids)] = ids
            out[row, 1 + len(ids)] = self.eot_id
        return out

    def __repr__(self) -> str:
        return f"ClipTokenizer(backend={self.backend!r}, context_length={self.context_length}, path='{self.path}')"


def load_tokenizer(path: Optional[Union[str, Path]] = None, context_length: int = CONTEXT_LENGTH,
                   backend: str = "auto") -> ClipTokenizer:
    """Load a CLIP tokenizer.json (default: the one shipped with edgeclip).

    backend: "hf" (needs the `tokenizers` package), "python" (pure Python), or "auto" (hf when importable).
    Both give the same ids for every text (see `edgeclip.tokenizer.pretokenize` for what that rests on).
    """
    if backend not in BACKENDS:
        raise TokenizerError(f"unknown tokenizer backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    context_length = _check_context_length(context_length)
    path = Path(tokenizer_json_path() if path is None else path)
    have_hf = _tokenizers_available()
    if backend == "hf" and not have_hf:
        raise TokenizerError("backend='hf' needs the `tokenizers` package (pip install tokenizers); "
                             "backend='python' works without it")
    if backend == "python" or not have_hf:
        if backend == "auto":
            log.info("`tokenizers` is not installed; using the pure-Python CLIP tokenizer")
        spec = read_tokenizer_json(path)
        impl: Union[HFBackend, PythonBackend] = PythonBackend(spec, compile_pattern(spec.specials))
        sot, eot = spec.sot_id, spec.eot_id
    else:
        from edgeclip.tokenizer.hf_cache import hf_backend

        impl, sot, eot = hf_backend(path)
    return ClipTokenizer(impl, context_length, sot, eot, path)


def _check_context_length(value: object) -> int:
    """An int >= 2 (room for the start and end tokens), else TokenizerError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise TokenizerError(f"context_length must be an int >= 2 (room for start and end tokens), got {value!r}")
    return value


def _tokenizers_available() -> bool:
    """True when `tokenizers` imports (absent, broken or blocked installs all count as unavailable)."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True
