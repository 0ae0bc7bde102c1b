"""`python -m export --out`: a folder that is not a bundle is refused untouched, missing parents are created, and
replacing a bundle keeps the files the user added to it (the policy in edgeclip.bundle.write)."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")
from edgeclip.bundle import load_bundle  # noqa: E402
from export.cli import main  # noqa: E402


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def foreign(folder: Path, kind: str) -> None:
    """What a user may have at --out: a browser extension (its own manifest.json), notes and photos."""
    folder.mkdir(parents=True)
    (folder / "NOTES.txt").write_text("my notes")
    (folder / "photos").mkdir()
    (folder / "photos" / "cat.jpg").write_bytes(os.urandom(2000))
    if kind == "extension":
        (folder / "manifest.json").write_text(json.dumps({"manifest_version": 3, "name": "an extension"}))


@pytest.mark.parametrize("kind", ["extension", "notes"])
def test_a_folder_that_is_not_a_bundle_survives_byte_for_byte(tmp_path, capsys, kind):
    out = tmp_path / "out"
    foreign(out, kind)
    before = snapshot(out)
    assert main(["--model", "demo", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "not an edgeclip bundle" in err and "NOTES.txt" in err and "No bundle was written" in err
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_parents_are_created_and_a_replaced_bundle_keeps_the_users_files(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "bundles" / "nested" / "demo"
        assert main(["--model", "demo", "--out", str(out)]) == 0, capsys.readouterr().err
        assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "bundles").stat().st_mode) == 0o755
        (out / "NOTES.txt").write_text("what I changed")
        (out / "photos").mkdir()
        (out / "photos" / "cat.jpg").write_bytes(os.urandom(2000))
        mine = {k: v for k, v in snapshot(out).items() if k in ("NOTES.txt", "photos/cat.jpg")}
        assert main(["--model", "demo", "--out", str(out)]) == 0, capsys.readouterr().err
    finally:
        os.umask(old)
    after = snapshot(out)
    assert {k: after[k] for k in mine} == mine
    assert load_bundle(out, verify=True).manifest["export_seconds"] is not None
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo"]
