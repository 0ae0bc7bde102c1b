"""Shared fixtures of the tokenizer tests: the golden rows and one tokenizer per backend variant."""
from __future__ import annotations

import json

import pytest

from edgeclip.tokenizer import load_tokenizer
from tests.reference_fixtures import REFERENCE_DIR

# (backend, use_regex): HF tokenizers; pure Python with the `regex` package; pure Python with stdlib `re` only.
VARIANTS = {"hf": ("hf", True), "python": ("python", True), "python-stdlib-re": ("python", False)}


@pytest.fixture(scope="session")
def golden() -> list[dict]:
    """The 56 rows of tokenizer_golden.json: {'text', 'ids'} at context 77."""
    return json.loads((REFERENCE_DIR / "tokenizer_golden.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="session")
def tokenizers_by_variant() -> dict:
    """One loaded tokenizer per variant (loading parses the 1.5 MB tokenizer.json, so do it once)."""
    pytest.importorskip("tokenizers", reason="the HF backend needs the `tokenizers` package")
    return {name: load_tokenizer(backend=b, use_regex=r) for name, (b, r) in VARIANTS.items()}


@pytest.fixture(params=list(VARIANTS))
def tok(request, tokenizers_by_variant):
    """Each backend variant in turn."""
    return tokenizers_by_variant[request.param]
