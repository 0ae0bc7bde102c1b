"""The shipped tokenizer data is exactly what `edgeclip.tokenizer.build` makes from CLIP's merge list."""
from __future__ import annotations

import copy
import gzip
import re
import subprocess
import sys

import pytest

from edgeclip.tokenizer import tokenizer_json_path
from edgeclip.tokenizer.build import (
    TOKENIZER_NAME, build_tokenizer_json, default_source, describe_drift, differing_code_points, main, write_json,
)
from edgeclip.tokenizer.pretokenize import shipped_classes


def test_shipped_tokenizer_json_equals_a_fresh_build(tmp_path):
    source = default_source()
    if source is None:
        pytest.skip("open_clip_torch is not installed, so CLIP's bpe_simple_vocab_16e6.txt.gz is not available")
    out = write_json(build_tokenizer_json(source), tmp_path / TOKENIZER_NAME)
    assert out.read_bytes() == tokenizer_json_path().read_bytes()


def test_class_table_records_its_source_and_unicode_version():
    table = shipped_classes()
    assert re.fullmatch(r"regex \d+\.\d+\.\d+", table["source"]), table["source"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", table["unicode_version"]), table["unicode_version"]
    sets = {name: {cp for a, b in table[name] for cp in range(a, b + 1)} for name in ("assigned", "letters", "numbers", "other")}
    assert sets["letters"] <= sets["assigned"] and sets["numbers"] <= sets["assigned"], "letters and numbers are assigned"
    assert not (sets["letters"] & sets["numbers"] or sets["letters"] & sets["other"] or sets["numbers"] & sets["other"])


def test_shipped_class_table_equals_a_fresh_build_from_the_same_regex(installed_classes):
    """Rebuilt with the `regex` release it names, the table is the same; another release only adds drift (named)."""
    table = shipped_classes()
    if installed_classes["source"] != table["source"]:
        pytest.skip(f"the table was built from {table['source']} (Unicode {table['unicode_version']}), this "
                    f"install has {installed_classes['source']} (Unicode {installed_classes['unicode_version']}); "
                    "a rebuild would record the newer version")
    assert installed_classes == table


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


def test_drift_report_names_versions_and_groups_code_points():
    """A table from a newer Unicode that assigns U+0558 as a letter (as Unicode 18 does) is reported as such."""
    shipped = shipped_classes()
    newer = copy.deepcopy(shipped)
    newer.update(source="regex 9999.1.1", unicode_version="99.0.0")
    newer["assigned"].append([0x558, 0x558])
    newer["letters"].append([0x558, 0x558])
    newer["other"] = [[a, b] for a, b in shipped["other"] if not a <= 0x558 <= b] + [
        r for a, b in shipped["other"] if a <= 0x558 <= b for r in ([a, 0x557], [0x559, b]) if r[0] <= r[1]]
    assert differing_code_points(shipped, newer) == [0x558]
    report = describe_drift(shipped, newer)
    assert shipped["source"] in report and "regex 9999.1.1 (Unicode 99.0.0)" in report
    assert "1 assigned only in the installed version (U+0558)" in report
    assert "same classes for every code point" in describe_drift(shipped, copy.deepcopy(shipped))


def test_check_command_exits_1_exactly_when_the_installed_regex_differs(installed_classes, capsys):
    differs = bool(differing_code_points(shipped_classes(), installed_classes))
    assert main(["--check"]) == int(differs)
    assert installed_classes["source"] in capsys.readouterr().out
