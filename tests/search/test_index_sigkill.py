"""SIGKILL at random moments of `edgeclip index`: the index always opens, passes SQLite's integrity check,
has no duplicate or half row, keeps every embedding committed before the kill, and the run that finally
completes gives the same index as a run that was never killed."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeclip.index import PhotoIndex
from tests.search.photo_trees import CLASSES, shape_image, write_broken

KILLS = 20  # kills that land while the index is being written
STARTUP_KILLS = 4  # extra kills in the first 0.6 s, before the run commits its first batch (start-up, schema)


def index_command(bundle: Path, root: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "edgeclip", "--providers", "cpu", "--threads", "1", "index", str(bundle), str(root),
            "--db", str(db), "--batch-size", "2"]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def rows(db: Path) -> int:
    """Committed rows (photos + failures) as a second process sees them; 0 before the tables exist."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("photos", "failures"))
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def snapshot(db: Path, dim: int) -> tuple[dict, dict]:
    """Check the file like a reader would, then return ({path: (size, mtime, embedding)}, {path: error})."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        photos = conn.execute("SELECT path, size, mtime_ns, embedding FROM photos").fetchall()
        failures = dict(conn.execute("SELECT path, error FROM failures").fetchall())
    finally:
        conn.close()
    assert len(photos) == len({p for p, *_ in photos}), "duplicate rows"
    assert not set(failures) & {p for p, *_ in photos}, "a file is both indexed and failed"
    assert all(len(blob) == 2 * dim for *_, blob in photos), "half-written embedding"
    return {p: (s, m, np.frombuffer(b, np.float16).astype(np.float32)) for p, s, m, b in photos}, failures


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill-tree")
    rng = np.random.default_rng(4)
    for i in range(360):
        colour, shape = CLASSES[i % len(CLASSES)]
        shape_image(colour, shape, rng).save(root / f"{i:03d}.jpg", quality=90)
    for i in range(4):
        write_broken(root / f"broken{i}.jpg", i)
    return root


def test_sigkill_never_corrupts_or_loses_embeddings(tree, tmp_path, demo_bundle, demo_encoder):
    dim = demo_encoder.embed_dim
    reference_db = tmp_path / "reference.db"
    subprocess.run(index_command(demo_bundle, tree, reference_db), check=True, capture_output=True)
    want, want_failures = snapshot(reference_db, dim)
    total = len(want) + len(want_failures)
    assert total == 364

    db = tmp_path / "killed.db"
    rng = np.random.default_rng(2024)
    kills = startup_kills = 0
    committed: dict = {}
    deadline = time.monotonic() + 300
    while kills < KILLS and time.monotonic() < deadline:
        before = rows(db)
        if before >= total - 20:  # a fast machine indexed most of the tree between kills: go on with a new index
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            before, committed = 0, {}
        proc = subprocess.Popen(index_command(demo_bundle, tree, db), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if startup_kills < STARTUP_KILLS:  # a random moment of start-up, at the latest the first commit
            end = time.monotonic() + rng.uniform(0.0, 0.6)
            while time.monotonic() < end and rows(db) == before and proc.poll() is None:
                time.sleep(0.002)
        else:
            target = before + int(rng.integers(1, 5))
            while rows(db) < target and proc.poll() is None:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.01))  # anywhere inside the next batch or commit
        if proc.poll() is not None:
            pytest.fail(f"the index run ended before its kill (exit {proc.returncode}, kills {kills}, startup {startup_kills}, rows {before} -> {rows(db)}): {proc.stderr.read().decode()[-500:]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        if startup_kills < STARTUP_KILLS:
            startup_kills += 1
        else:
            kills += 1
        got, failures = snapshot(db, dim) if db.exists() else ({}, {})
        assert set(committed) <= set(got), "a committed embedding was lost"
        for path, (size, mtime, vector) in got.items():
            assert (size, mtime) == want[path][:2]
            assert cosine(vector, want[path][2]) > 0.9999, f"{path}: embedding differs from the reference"
        assert set(failures) <= set(want_failures)
        committed = got
    assert kills == KILLS

    done = subprocess.run(index_command(demo_bundle, tree, db), check=True, capture_output=True, text=True)
    assert f"{len(want) - len(committed)} added" in done.stdout
    got, failures = snapshot(db, dim)
    assert set(got) == set(want) and failures.keys() == want_failures.keys()
    for path, (size, mtime, vector) in got.items():
        assert (size, mtime) == want[path][:2] and cosine(vector, want[path][2]) > 0.9999
    with PhotoIndex(db) as index:
        assert len(index) == len(want)
