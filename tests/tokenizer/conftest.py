"""Fixtures of the tokenizer tests: the golden rows and one tokenizer per backend."""
from __future__ import annotations

import importlib.util
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


NO_TOKENIZERS = "the HF backend needs the `tokenizers` package (pip install tokenizers)"


@pytest.fixture(scope="session")
def tokenizers_by_variant() -> dict:
    """One loaded tokenizer per available backend (loading parses the 1.5 MB tokenizer.json, so do it once)."""
    loaded = {"python": load_tokenizer(backend="python")}
    if importlib.util.find_spec("tokenizers") is not None:
        loaded["hf"] = load_tokenizer(backend="hf")
    return loaded


@pytest.fixture(scope="session")
def both_backends(tokenizers_by_variant) -> dict:
    """Both backends; skips where `tokenizers` is not installed."""
    if "hf" not in tokenizers_by_variant:
        pytest.skip(NO_TOKENIZERS)
    return tokenizers_by_variant


@pytest.fixture(scope="session")
def installed_classes() -> dict:
    """The class table as the installed `regex` (what OpenCLIP splits with) would build it today (a few seconds)."""
    pytest.importorskip("regex", reason="the `regex` package (OpenCLIP's pattern engine) is not installed")
    return build_unicode_classes()


@pytest.fixture(params=VARIANTS)
def tok(request, tokenizers_by_variant):
    """Each backend in turn (the HF one skips where `tokenizers` is not installed)."""
    if request.param not in tokenizers_by_variant:
        pytest.skip(NO_TOKENIZERS)
    return tokenizers_by_variant[request.param]
