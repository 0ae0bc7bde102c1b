"""Bulk embedding on a local Ray (2 CPUs, no dashboard): the rows equal the local Encoder's, bad images become
error rows, a worker killed mid-run still gives every input exactly once, and the Parquet merges into an index."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray Data is the optional ray extra: pip install -e '.[ray]'")
pytest.importorskip("pyarrow", reason="Ray Data's Parquet output needs pyarrow (part of edgeclip[ray])")

from edgeclip.distributed import EmbedBatch, embed, read_embeddings, write_embeddings  # noqa: E402
from edgeclip.index import BundleMismatchError, PhotoIndex, bundle_identity  # noqa: E402
from tests.search.photo_trees import make_tree  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield context
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-photos")
    good, broken = make_tree(root, n_good=200, n_broken=3, seed=8)
    return root, [str(p) for p in good], [str(p) for p in broken]


def table_rows(out) -> dict:
    identity, rows = read_embeddings(out)
    listed = list(rows)
    counts = Counter(r["path"] for r in listed)
    assert max(counts.values()) == 1, f"duplicated rows: {[p for p, n in counts.items() if n > 1][:5]}"
    return {r["path"]: r for r in listed}, identity


def test_ray_embeddings_equal_the_local_encoder(local_ray, images, demo_bundle, demo_encoder, tmp_path):
    _, good, broken = images
    out = write_embeddings(embed(good + broken, demo_bundle, batch_size=16), tmp_path / "parquet")
    got, identity = table_rows(out)
    assert identity == bundle_identity(demo_encoder.bundle)
    assert set(got) == set(good + broken)
    local = demo_encoder.encode_image(good, batch_size=16)
    remote = np.stack([got[p]["embedding"] for p in good])
    assert (local * remote).sum(1).min() >= 0.99999
    for path in broken:
        assert got[path]["embedding"] is None and got[path]["error"]
    assert all(got[p]["error"] is None and got[p]["size"] == os.path.getsize(p) for p in good)


def test_killed_worker_is_retried_and_output_is_exactly_once(local_ray, images, demo_bundle, demo_encoder, tmp_path):
    good = images[1][:48]
    marker = tmp_path / "kill-once"
    marker.write_text("the first worker to see the marked image dies")
    victim = good[29]

    class DiesOnce(EmbedBatch):  # defined here, so Ray ships it by value
        def __call__(self, batch):
            if victim in batch.column("path").to_pylist() and os.path.exists(str(marker)):
                os.unlink(str(marker))
                os._exit(1)
            return super().__call__(batch)

    out = write_embeddings(embed(good, demo_bundle, batch_size=8, actor_class=DiesOnce), tmp_path / "parquet")
    assert not marker.exists(), "the worker was never killed"
    got, _ = table_rows(out)
    assert sorted(got) == sorted(good)
    local = demo_encoder.encode_image(good, batch_size=16)
    assert (local * np.stack([got[p]["embedding"] for p in good])).sum(1).min() >= 0.99999


def test_command_on_the_running_cluster_then_import(local_ray, images, demo_bundle, other_bundle, tmp_path):
    folder, good, broken = images
    out = tmp_path / "parquet"
    run = subprocess.run([sys.executable, "-m", "edgeclip.distributed", "--bundle", str(demo_bundle),
                          "--images", str(folder / "album1" / "**" / "*.jpg"), "--out", str(out),
                          "--address", local_ray.address_info["address"], "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout)
    album = sorted(p for p in good + broken if "/album1/" in p)
    assert summary["rows"] == len(album) and summary["errors"] == sum("/album1/" in p for p in broken)

    from edgeclip.cli import main

    db = tmp_path / "photos.db"
    assert main(["--json", "index", "--import", str(out), "--db", str(db)]) == 0
    with PhotoIndex(db) as index:
        assert sorted(index.paths() + [f["path"] for f in index.failures()]) == album
    # the files are unchanged: indexing the same folder locally embeds nothing
    assert main(["--json", "index", str(demo_bundle), str(folder / "album1"), "--db", str(db)]) == 0
    with PhotoIndex(db, None) as index:
        assert len(index) == len([p for p in album if p in good])
    other_db = tmp_path / "other.db"
    from edgeclip import Encoder

    PhotoIndex(other_db, Encoder(other_bundle, providers="cpu", threads=1)).close()
    with PhotoIndex(other_db) as index, pytest.raises(BundleMismatchError):
        identity, rows = read_embeddings(out)
        index.import_rows(rows, identity)
