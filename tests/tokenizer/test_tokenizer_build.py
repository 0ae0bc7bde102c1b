"""The shipped tokenizer data is exactly what `edgeclip.tokenizer.build` makes from CLIP's merge list."""
from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from edgeclip.tokenizer import tokenizer_json_path
from edgeclip.tokenizer.build import TOKENIZER_NAME, build_tokenizer_json, default_source, main, write_json


def test_shipped_tokenizer_json_equals_a_fresh_build(tmp_path):
    source = default_source()
    if source is None:
        pytest.skip("open_clip_torch is not installed, so CLIP's bpe_simple_vocab_16e6.txt.gz is not available")
    out = write_json(build_tokenizer_json(source), tmp_path / TOKENIZER_NAME)
    assert out.read_bytes() == tokenizer_json_path().read_bytes()


def test_shipped_tokenizer_json_loads_in_hf_tokenizers_as_is():
    tokenizers = pytest.importorskip("tokenizers", reason="needs the `tokenizers` package")
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_json_path()))
    assert tok.encode("a photo of a cat").ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.decode(tok.encode("a photo of a cat").ids) == "a photo of a cat"


def test_a_file_that_is_not_a_merge_list_is_refused(tmp_path):
    bad = tmp_path / "bpe.txt.gz"
    bad.write_bytes(gzip.compress(b"#version\nonly one merge line\n"))
    assert main(["--source", str(bad), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / TOKENIZER_NAME).exists()


def test_cli_help_explains_and_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "edgeclip.tokenizer.build", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "tokenizer.json" in proc.stdout
