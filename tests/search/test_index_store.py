"""The index file: SQLite schema and WAL, one bundle per index (refusal and --rebuild), unreadable files,
and the `edgeclip index` / `edgeclip search` commands end to end."""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from edgeclip import BundleError, Encoder, InputError
from edgeclip.cli import main
from edgeclip.index import SCHEMA_VERSION, BundleMismatchError, PhotoIndex, PhotoIndexError
from tests.search.photo_trees import make_tree, shape_image


@pytest.fixture()
def photos(tmp_path):
    make_tree(tmp_path / "photos", n_good=12, n_broken=2, seed=5)
    rng = np.random.default_rng(0)
    shape_image("red", "circle", rng).save(tmp_path / "photos" / "red-circle.jpg")
    return tmp_path / "photos"


def test_schema_wal_and_one_row_per_file(photos, tmp_path, demo_encoder):
    db = tmp_path / "photos.db"
    with PhotoIndex(db, demo_encoder) as index:
        index.update([photos])
        index.update([photos])
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    rows = conn.execute("SELECT path, size, mtime_ns, length(embedding) FROM photos").fetchall()
    assert len(rows) == 13 == len({r[0] for r in rows})
    assert {r[3] for r in rows} == {demo_encoder.embed_dim * 2}  # float16
    identity = json.loads(dict(conn.execute("SELECT key, value FROM meta"))["bundle_identity"])
    assert identity["model_id"] == "demo"
    assert identity["graphs"]["image"] == demo_encoder.bundle.towers["image"]["sha256"]


def test_another_bundle_is_refused_until_rebuild(photos, tmp_path, demo_encoder, other_bundle):
    db = tmp_path / "photos.db"
    with PhotoIndex(db, demo_encoder) as index:
        index.update([photos])
    other = Encoder(other_bundle, providers="cpu", threads=1)
    with pytest.raises(BundleMismatchError, match="--rebuild") as err:
        PhotoIndex(db, other)
    assert isinstance(err.value, BundleError) and "demo" in str(err.value)
    with PhotoIndex(db) as index:
        assert len(index) == 13  # the refusal changed nothing
    with PhotoIndex(db, other, rebuild=True) as index:
        assert len(index) == 0
        report = index.update([photos])
        assert len(report.added) == 13 and len(report.failed) == 2
        assert {len(v) for v in index.embeddings().values()} == {16}


def test_not_an_index_newer_schema_and_missing_folder(tmp_path, demo_encoder):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PhotoIndexError, match="not an edgeclip photo index"):
        PhotoIndex(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(PhotoIndexError, match="other tables: t"):
        PhotoIndex(other)
    newer = tmp_path / "newer.db"
    PhotoIndex(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    with pytest.raises(PhotoIndexError, match="upgrade edgeclip"):
        PhotoIndex(newer)
    with PhotoIndex(tmp_path / "ok.db", demo_encoder) as index:
        with pytest.raises(InputError, match="does not exist"):
            index.update([tmp_path / "unmounted-card"])


def test_cli_index_report_search(photos, tmp_path, demo_bundle, capsys):
    db = tmp_path / "cli.db"
    assert main(["--json", "index", str(demo_bundle), str(photos), "--db", str(db)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert len(first["update"]["added"]) == 13 and len(first["update"]["failed"]) == 2
    assert first["index"]["photos"] == 13
    assert main(["index", "--report", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "broken files (skipped until they change) (2):" in out and "index " in out
    assert main(["--json", "search", "--db", str(db), "a red circle", "--top-k", "3"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["results"][0]["path"] == str(photos / "red-circle.jpg") and len(found["results"]) == 3
    assert main(["search", "--db", str(db), "--image", str(photos / "red-circle.jpg"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.split()[1] == str(photos / "red-circle.jpg")
    assert main(["search", "--db", str(tmp_path / "none.db"), "x"]) == 1
    assert "no index at" in capsys.readouterr().err
    assert main(["index", str(demo_bundle), "--db", str(db)]) == 1
    assert "at least one PATH" in capsys.readouterr().err


def test_search_matrix_cache_follows_the_index(photos, tmp_path, demo_encoder):
    db = tmp_path / "photos.db"
    with PhotoIndex(db, demo_encoder) as index:
        index.update([photos])
        first = index.search("a red circle", top_k=1)[0]
        cached = sorted(p.name for p in index.cache_dir.iterdir())
        assert cached == [f"g{index.generation}-ids.npy", f"g{index.generation}-vectors.npy"]
    with PhotoIndex(db, demo_encoder) as index:  # reopened: the matrix comes memory-mapped from the cache
        assert isinstance(index.matrix().vectors, np.memmap) or isinstance(index.matrix().vectors.base, np.memmap)
        assert index.search("a red circle", top_k=1)[0] == first
        (photos / "red-circle.jpg").unlink()
        index.update([photos])
        assert all(m.path != first.path for m in index.search("a red circle", top_k=20))
        assert sorted(p.name for p in index.cache_dir.iterdir())[0].startswith(f"g{index.generation}-")
        vectors_file = index.cache_dir / f"g{index.generation}-vectors.npy"
        vectors_file.write_bytes(b"broken cache")
    with PhotoIndex(db, demo_encoder) as index:  # a damaged cache is read from the database again
        assert len(index.search("a red circle", top_k=100)) == len(index) == 12
