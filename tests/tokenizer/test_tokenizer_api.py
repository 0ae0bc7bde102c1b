"""The tokenizer's API contract: shapes, input validation, clear errors for bad files and arguments."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgeclip import EdgeclipError
from edgeclip.tokenizer import (
    CONTEXT_LENGTH, EOT_ID, SOT_ID, TokenizerError, TokenizerInputError, load_tokenizer, tokenizer_json_path,
)


def test_single_string_and_list_give_int64_rows(tok):
    one = tok("a photo of a cat")
    assert one.dtype == np.int64 and one.shape == (1, CONTEXT_LENGTH)
    many = tok(["a photo of a cat", "a dog"])
    assert many.shape == (2, CONTEXT_LENGTH)
    np.testing.assert_array_equal(many[0], one[0])
    assert many[:, 0].tolist() == [SOT_ID, SOT_ID]


def test_tuples_and_generators_are_accepted(tok):
    expected = tok(["a", "b"])
    np.testing.assert_array_equal(tok(("a", "b")), expected)
    np.testing.assert_array_equal(tok(t for t in ["a", "b"]), expected)


def test_empty_list_gives_zero_rows(tok):
    out = tok([])
    assert out.shape == (0, CONTEXT_LENGTH) and out.dtype == np.int64


@pytest.mark.parametrize("bad", [None, 42, 3.5, b"bytes", bytearray(b"x"), ["ok", 7], ["ok", None], [b"x"]])
def test_non_string_input_is_a_clear_type_error(tok, bad):
    with pytest.raises(TypeError, match="str") as info:
        tok(bad)
    assert isinstance(info.value, TokenizerInputError) and isinstance(info.value, EdgeclipError)


def test_bad_item_error_names_its_index(tok):
    with pytest.raises(TokenizerInputError, match=r"texts\[1\] is int"):
        tok(["fine", 7])


def test_every_row_has_exactly_one_start_and_end(tok, golden):
    out = tok([case["text"] for case in golden])
    assert (out[:, 0] == SOT_ID).all()
    assert ((out == EOT_ID).sum(axis=1) == 1).all()
    ends = (out == EOT_ID).argmax(axis=1)
    assert all((row[end + 1 :] == 0).all() for row, end in zip(out, ends)), "padding after the end token must be 0"


def test_shipped_tokenizer_json_is_the_default(tok):
    assert tok.path == tokenizer_json_path() and tokenizer_json_path().is_file()
    assert load_tokenizer(tokenizer_json_path(), backend="python").backend == "python"


@pytest.mark.parametrize("backend", ["fast", "", None, "HF"])
def test_unknown_backend_is_refused(backend):
    with pytest.raises(TokenizerError, match="unknown tokenizer backend"):
        load_tokenizer(backend=backend)


@pytest.mark.parametrize("ctx", [0, 1, -5, 7.0, "77", True])
def test_bad_context_length_is_refused(ctx):
    with pytest.raises(TokenizerError, match="context_length"):
        load_tokenizer(context_length=ctx, backend="python")


def test_bad_context_length_per_call_is_refused(tok):
    with pytest.raises(TokenizerError, match="context_length"):
        tok("a", context_length=1)


def test_hf_backend_without_tokenizers_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(TokenizerError, match="pip install tokenizers"):
        load_tokenizer(backend="hf")
    assert load_tokenizer(backend="auto").backend == "python"


def _write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def shipped_doc() -> dict:
    return json.loads(tokenizer_json_path().read_text(encoding="utf-8"))


@pytest.mark.parametrize("case,message", [
    ("missing", "not found"),
    ("not json", "cannot read"),
    ("not bpe", "not a BPE tokenizer"),
    ("no suffix", "end_of_word_suffix"),
    ("no specials", "start/end tokens"),
    ("bad merge", "malformed merge"),
    ("unknown merge result", "missing from the vocabulary"),
])
def test_bad_tokenizer_files_are_refused_naming_the_file(tmp_path, shipped_doc, case, message):
    path = tmp_path / "tokenizer.json"
    model = dict(shipped_doc["model"])
    if case == "not json":
        _write(path, "{ truncated")
    elif case == "not bpe":
        _write(path, {"model": {"type": "WordPiece", "vocab": {}}})
    elif case == "no suffix":
        _write(path, {"model": {**model, "end_of_word_suffix": None}})
    elif case == "no specials":
        vocab = {k: v for k, v in model["vocab"].items() if not k.startswith("<end")}
        _write(path, {"model": {**model, "vocab": vocab}})
    elif case == "bad merge":
        _write(path, {"model": {**model, "merges": ["a b c"]}})
    elif case == "unknown merge result":
        _write(path, {"model": {**model, "merges": ["ðŁ ðŁĺĤ"]}})
    with pytest.raises(TokenizerError, match=message) as info:
        load_tokenizer(path, backend="python")
    assert str(path) in str(info.value)


def test_merges_as_lists_are_read_like_strings(tmp_path, shipped_doc, golden):
    """tokenizers >= 0.20 writes merges as [a, b] pairs; both spellings load to the same tokenizer."""
    doc = dict(shipped_doc, model={**shipped_doc["model"], "merges": [m.split(" ") for m in shipped_doc["model"]["merges"]]})
    tok = load_tokenizer(_write(tmp_path / "tokenizer.json", doc), backend="python")
    assert tok([c["text"] for c in golden[:20]]).tolist() == [c["ids"] for c in golden[:20]]
