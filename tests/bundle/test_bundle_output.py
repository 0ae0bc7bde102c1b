"""write_bundle's output policy: nothing we did not write is deleted, missing parents are made, the umask holds,
and a SIGKILL at any point leaves the old complete bundle or the new one, with nothing left after the next run."""
from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeclip.bundle import load_bundle
from edgeclip.bundle.write import _host, recover, write_bundle
from edgeclip.errors import BundleError

ROOT = Path(__file__).resolve().parents[2]
onnx = pytest.importorskip("onnx", reason="the tiny bundle's graph is built with onnx")
from tests.runtime.tiny_bundle import image_tower  # noqa: E402
from tests.toy_bundle import preprocess_spec, tower_entry  # noqa: E402


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A tiny image graph and two versions of a small extra file, the inputs of every write here."""
    root = tmp_path_factory.mktemp("sources")
    model = image_tower(32, 8, "dynamic", np.random.default_rng(0))
    onnx.save(model, str(root / "image.onnx"))
    (root / "manifest.json").write_text(json.dumps({
        "model_id": "tiny-output-test", "embed_dim": 8, "towers": {"image": tower_entry(model, "image.onnx")},
        "preprocess": preprocess_spec(32), "tokenizer": None}))
    for version in ("v1", "v2", "v3"):
        (root / f"{version}.txt").write_text(version * 1000)
    return root


def write(sources: Path, out: Path, version: str) -> Path:
    manifest = json.loads((sources / "manifest.json").read_text())
    return write_bundle(out, manifest, {"image.onnx": sources / "image.onnx", "version.txt": sources / f"{version}.txt"})


def version_of(out: Path) -> str:
    """Which complete bundle `out` holds (load_bundle verifies every sha256)."""
    return (load_bundle(out, verify=True).root / "version.txt").read_text()[:2]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_missing_parents_are_created_and_folders_honour_the_umask(sources, tmp_path):
    old = os.umask(0o022)
    try:
        out = write(sources, tmp_path / "a" / "b" / "bundle", "v1")
    finally:
        os.umask(old)
    assert version_of(out) == "v1"
    for folder in (tmp_path / "a", tmp_path / "a" / "b", out):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    assert stat.S_IMODE((out / "image.onnx").stat().st_mode) == 0o644
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["bundle"]


@pytest.mark.parametrize("content", ["browser-extension", "plain-folder", "a-file"])
def test_a_folder_that_is_not_a_bundle_is_refused_and_left_byte_for_byte(sources, tmp_path, content):
    out = tmp_path / "out"
    if content == "a-file":
        out.write_bytes(b"not a folder")
        before = out.read_bytes()
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        (out / "sub").mkdir()
        (out / "sub" / "photo.jpg").write_bytes(os.urandom(100))
        if content == "browser-extension":
            (out / "manifest.json").write_text(json.dumps({"manifest_version": 3, "name": "an extension"}))
        before = snapshot(out)
    with pytest.raises(BundleError, match="a file|not an edgeclip bundle") as err:
        write(sources, out, "v1")
    if content != "a-file":
        assert "notes.txt" in str(err.value) and snapshot(out) == before
    else:
        assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replacing_a_bundle_keeps_the_files_its_manifest_does_not_name(sources, tmp_path):
    out = write(sources, tmp_path / "out", "v1")
    (out / "NOTES.txt").write_text("my notes")
    (out / "mine").mkdir()
    (out / "mine" / "photo.bin").write_bytes(os.urandom(5000))
    os.symlink("NOTES.txt", out / "link-to-notes")
    mine = {k: v for k, v in snapshot(out).items() if k in ("NOTES.txt", "mine/photo.bin")}
    write(sources, out, "v2")
    assert version_of(out) == "v2"
    after = snapshot(out)
    assert {k: after[k] for k in mine} == mine
    assert os.readlink(out / "link-to-notes") == "NOTES.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_user_file_with_the_name_of_a_new_bundle_file_stops_the_write(sources, tmp_path):
    out = write(sources, tmp_path / "out", "v1")
    manifest = json.loads((sources / "manifest.json").read_text())
    (out / "report.json").write_text("the user's own report")
    before = snapshot(out)
    with pytest.raises(BundleError, match="report.json"):
        write_bundle(out, manifest, {"image.onnx": sources / "image.onnx", "report.json": sources / "v2.txt"})
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---- kills ---------------------------------------------------------------------------------------------------------

# The child counts the filesystem changes it makes under the test folder (Python audit events) and kills itself
# with SIGKILL right before change number `kill_at`: every step of a write is a kill point, the window between
# the two renames of the swap included.
CHILD = r"""
import json, os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from edgeclip.bundle.write import write_bundle
sources, out, version, kill_at = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
manifest = json.loads((sources / "manifest.json").read_text())
root = str(out.parent)
seen = []
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wxa+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        paths = [path] if writes else []
    elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.link", "os.symlink", "shutil.rmtree"):
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    if any(str(os.fsdecode(p)).startswith(root) for p in paths):
        seen.append(event)
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
versions = [version] if kill_at >= 0 else ["v2", "v3"] * 10**6  # < 0: write until killed
if kill_at < 0:
    print("writing", flush=True)
for v in versions:
    write_bundle(out, manifest, {"image.onnx": sources / "image.onnx", "version.txt": sources / f"{v}.txt"})
print(json.dumps(seen))
"""


def run_child(sources: Path, out: Path, version: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(sources), str(out), version, str(kill_at)],
                          capture_output=True, text=True, timeout=60)


def test_sigkill_at_every_step_leaves_the_old_or_the_new_bundle_and_the_next_run_cleans_up(sources, tmp_path):
    out = tmp_path / "out"
    write(sources, out, "v1")
    (out / "NOTES.txt").write_text("my notes")
    notes = (out / "NOTES.txt").read_bytes()
    full = run_child(sources, out, "v2")
    assert full.returncode == 0, full.stderr
    steps = json.loads(full.stdout.strip().splitlines()[-1])
    assert steps.count("os.rename") >= 2 and len(steps) >= 20, steps
    between = [i + 1 for i, e in enumerate(steps) if e == "os.rename"]
    states = []
    for kill_at in range(1, len(steps) + 1):
        write(sources, out, "v1")  # the old bundle, NOTES.txt carried along
        proc = run_child(sources, out, "v2", kill_at)
        assert proc.returncode == -signal.SIGKILL, (kill_at, proc.stderr)
        right_after = version_of(out) if out.exists() else "missing"
        recover(out)  # what the next run does first
        state = version_of(out)
        states.append((kill_at, right_after, state))
        assert state in ("v1", "v2") and right_after in ("v1", "v2", "missing"), (kill_at, right_after, state)
        assert (out / "NOTES.txt").read_bytes() == notes, kill_at
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], (kill_at, sorted(os.listdir(tmp_path)))
    # the kill between the two renames did leave --out missing until the next run, which finished the swap
    assert any(after == "missing" and state == "v2" for at, after, state in states if at in between[1:]), states
    assert {state for _, _, state in states} == {"v1", "v2"}
    write(sources, out, "v3")  # and the next real run works
    assert version_of(out) == "v3" and (out / "NOTES.txt").read_bytes() == notes


def test_a_bundle_missing_after_a_kill_between_the_renames_says_how_to_recover(sources, tmp_path, capsys):
    from edgeclip.cli import main

    out = tmp_path / "out"
    write(sources, out, "v1")
    full = run_child(sources, out, "v2")
    steps = json.loads(full.stdout.strip().splitlines()[-1])
    second_rename = [i + 1 for i, e in enumerate(steps) if e == "os.rename"][-1]
    write(sources, out, "v1")
    assert run_child(sources, out, "v2", second_rename).returncode == -signal.SIGKILL
    assert not out.exists()
    with pytest.raises(BundleError, match="edgeclip recover"):
        load_bundle(out)
    assert main(["recover", str(out)]) == 0
    assert version_of(out) == "v2" and "sha256 verified" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sigkill_at_random_times_never_loses_the_bundle(sources, tmp_path):
    """A child replaces the bundle again and again; SIGKILL lands at a random moment of some write."""
    out = tmp_path / "out"
    write(sources, out, "v1")
    (out / "NOTES.txt").write_text("my notes")
    rng = random.Random(1234)
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(sources), str(out), "v2", "-1"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recover(out)
        assert version_of(out) in ("v1", "v2", "v3")
        assert (out / "NOTES.txt").read_text() == "my notes"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_live_writers_temporary_folders_are_left_alone(sources, tmp_path):
    out = write(sources, tmp_path / "out", "v1")
    journal = tmp_path / f".out.edgeclip-0000beef-{os.getpid()}-{_host()}.journal"
    journal.touch()
    (tmp_path / ".out.tmp-0000beef").mkdir()
    (tmp_path / ".out.tmp-0000beef" / "half.onnx").write_bytes(b"x")
    unrelated = tmp_path / ".out.tmp-notours"
    unrelated.mkdir()
    write(sources, out, "v2")
    assert journal.exists() and (tmp_path / ".out.tmp-0000beef" / "half.onnx").exists() and unrelated.exists()


def test_a_killed_runs_scratch_and_swap_folders_are_removed_by_the_next_run(sources, tmp_path):
    out = write(sources, tmp_path / "out", "v1")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited
    for token, role in (("0000aaaa", "work"), ("0000bbbb", "tmp")):
        (tmp_path / f".out.edgeclip-{token}-{pid}-{_host()}.journal").touch()
        (tmp_path / f".out.{role}-{token}").mkdir()
        (tmp_path / f".out.{role}-{token}" / "image.onnx").write_bytes(os.urandom(1000))
    foreign = tmp_path / ".out.tmp-somebody-else"  # no journal names it: not provably ours, kept
    foreign.mkdir()
    write(sources, out, "v2")
    assert version_of(out) == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-somebody-else", "out"]
