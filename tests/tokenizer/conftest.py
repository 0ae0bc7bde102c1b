"""Shared fixtures of the tokenizer tests: the golden rows and one tokenizer per backend variant."""
from __future__ import annotations

import json

import pytest

from edgeclip.tokenizer import load_tokenizer
from edgeclip.tokenizer.build import build_unicode_classes
from tests.reference_fixtures import REFERENCE_DIR

# The two backends: HF `tokenizers` (Rust) and pure Python (stdlib `re`); both split with the shipped class table.
VARIANTS = ("hf", "python")


@pytest.fixture(scope="session")
def golden() -> list[dict]:
    """The 56 rows of tokenizer_golden.json: {'text', 'ids'} at context 77."""
    return json.loads((REFERENCE_DIR / "tokenizer_golden.json").read_text(encoding="utf-8"))["cases"]


@pytest.fixture(scope="session")
def tokenizers_by_variant() -> dict:
    """One loaded tokenizer per backend (loading parses the 1.5 MB tokenizer.json, so do it once)."""
    pytest.importorskip("tokenizers", reason="the HF backend needs the `tokenizers` package")
    return {name: load_tokenizer(backend=name) for name in VARIANTS}


@pytest.fixture(scope="session")
def installed_classes() -> dict:
    """The class table as the installed `regex` (what OpenCLIP splits with) would build it today (a few seconds)."""
    pytest.importorskip("regex", reason="the `regex` package (OpenCLIP's pattern engine) is not installed")
    return build_unicode_classes()


@pytest.fixture(params=VARIANTS)
def tok(request, tokenizers_by_variant):
    """Each backend variant in turn."""
    return tokenizers_by_variant[request.param]
