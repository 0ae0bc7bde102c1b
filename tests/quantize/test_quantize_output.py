"""`python -m quantize.int8 --out`: a folder that is not a bundle is refused untouched (before any calibration), and
replacing a bundle keeps the files the user added to it (the policy in edgeclip.bundle.write)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgeclip.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[2]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def quantize(tiny_bundle: Path, tiny_shards: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantize.int8", "--model", "tiny-test", "--bundle", str(tiny_bundle),
                           "--calibration", str(tiny_shards / "calib"), "--eval", str(tiny_shards / "eval"),
                           "--samples", "16", "--eval-samples", "8", "--search-samples", "4", "--out", str(out),
                           "--quiet", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_a_folder_that_is_not_a_bundle_survives_byte_for_byte(tiny_bundle, tiny_shards, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"manifest_version": 3, "name": "a browser extension"}))
    (out / "background.js").write_text("// mine")
    before = snapshot(out)
    proc = quantize(tiny_bundle, tiny_shards, out)
    assert proc.returncode == 1 and "not an edgeclip bundle" in proc.stderr and "background.js" in proc.stderr
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replacing_a_bundle_keeps_the_users_files(tiny_bundle, tiny_shards, tmp_path):
    out = tmp_path / "int8"
    shutil.copytree(tiny_bundle, out)  # an older bundle at --out, with the user's files added
    (out / "NOTES.txt").write_text("my notes")
    (out / "photos").mkdir()
    (out / "photos" / "cat.jpg").write_bytes(os.urandom(2000))
    mine = {k: v for k, v in snapshot(out).items() if k in ("NOTES.txt", "photos/cat.jpg")}
    proc = quantize(tiny_bundle, tiny_shards, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert load_bundle(out, verify=True).manifest["quantization"]["target"] == "cpu"
    after = snapshot(out)
    assert {k: after[k] for k in mine} == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8"]
