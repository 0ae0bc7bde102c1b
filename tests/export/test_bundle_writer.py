"""write_bundle: hashes filled, atomic replace, nothing left behind on failure."""
from __future__ import annotations

import json

import pytest

from edgeclip.bundle import load_bundle, sha256_file
from edgeclip.errors import BundleError
from edgeclip.bundle.write import write_bundle


def _manifest() -> dict:
    return {"model_id": "demo", "towers": {"text": {"file": "text.onnx", "sha256": None,
                                                    "inputs": [{"name": "input_ids", "shape": [1, 77]}]}},
            "tokenizer": {"file": "tokenizer.json", "sha256": None}}


def test_hashes_extra_files_and_replace(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("text.onnx", "tokenizer.json", "report.json"):
        (src / name).write_text(name)
    out = write_bundle(tmp_path / "b", _manifest(), {n: src / n for n in ("text.onnx", "tokenizer.json", "report.json")})
    bundle = load_bundle(out)  # verifies every sha256
    assert bundle.manifest["towers"]["text"]["sha256"] == sha256_file(src / "text.onnx")
    assert bundle.manifest["extra_files"] == {"report.json": sha256_file(src / "report.json")}
    (src / "text.onnx").write_text("v2")
    write_bundle(out, _manifest(), {n: src / n for n in ("text.onnx", "tokenizer.json")})
    assert (out / "text.onnx").read_text() == "v2" and not (out / "report.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "src"]


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(BundleError, match="cannot copy"):
        write_bundle(tmp_path / "b", _manifest(), {"text.onnx": tmp_path / "missing.onnx"})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "t.onnx").write_text("x")
    with pytest.raises(BundleError):  # tokenizer.json is named in the manifest but not supplied
        write_bundle(tmp_path / "b", _manifest(), {"text.onnx": tmp_path / "t.onnx"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]


def test_refuses_to_overwrite_a_non_bundle(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    (tmp_path / "t.onnx").write_text("x")
    (tmp_path / "tok.json").write_text("{}")
    with pytest.raises(BundleError, match="not an edgeclip bundle"):
        write_bundle(tmp_path / "docs", _manifest(), {"text.onnx": tmp_path / "t.onnx", "tokenizer.json": tmp_path / "tok.json"})
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"
    assert json.loads(json.dumps(_manifest()))  # manifest given by the caller is not mutated
    assert _manifest()["towers"]["text"]["sha256"] is None


def test_torch_free_modules():
    """QUANTIZE and `--list` use these without the build dependencies."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys, export, export.registry, export.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'open_clip')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
