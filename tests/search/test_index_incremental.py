"""Incremental indexing on a generated photo tree (the CI-sized version of the 2,000-image benchmark,
benchmarks/test_bench_index.py): a second run reads nothing; 100 changed + 100 added + 100 deleted are exactly
the files handled; broken files are recorded once and retried only when they change."""
from __future__ import annotations

import os

import numpy as np
import pytest

from edgeclip.index import PhotoIndex
from tests.search.photo_trees import make_tree, mixed_size_image, rewrite


class CountingEncoder:
    """The real encoder, counting the images it is asked to embed."""

    def __init__(self, encoder):
        self.inner, self.bundle, self.images = encoder, encoder.bundle, 0

    def embed_images(self, images, **options):
        def counted():
            for image in images:
                self.images += 1
                yield image

        return self.inner.embed_images(counted(), **options)


@pytest.fixture()
def tree(tmp_path):
    good, broken = make_tree(tmp_path / "photos", n_good=280, n_broken=20, seed=3)
    return tmp_path / "photos", good, broken


def test_second_run_reads_nothing_and_changes_are_exactly_handled(tree, tmp_path, demo_encoder):
    root, good, broken = tree
    enc = CountingEncoder(demo_encoder)
    index = PhotoIndex(tmp_path / "photos.db", enc, batch_size=16)
    first = index.update([root])
    assert sorted(first.added) == sorted(map(str, good)) and not first.changed and not first.deleted
    assert sorted(p for p, _ in first.failed) == sorted(map(str, broken))
    assert all(e for _, e in first.failed)
    assert len(index) == 280 and len(index.failures()) == 20

    enc.images = 0
    second = index.update([root])
    assert enc.images == 0 and second.embedded == 0 and not second.failed and not second.deleted
    assert second.unchanged == 280 and second.still_broken == 20

    rng = np.random.default_rng(11)
    changed, deleted = good[:100], good[100:200]
    for path in changed:
        rewrite(path, rng)
    for path in deleted:
        path.unlink()
    added = [root / "new" / f"new{i:03d}.jpg" for i in range(100)]
    added[0].parent.mkdir()
    for path in added:
        mixed_size_image(rng).save(path, quality=88)
    enc.images = 0
    third = index.update([root])
    assert sorted(third.changed) == sorted(map(str, changed))
    assert sorted(third.added) == sorted(map(str, added))
    assert third.deleted == sorted(map(str, deleted))
    assert not third.failed and third.still_broken == 20 and third.unchanged == 80
    assert enc.images == 200  # nothing else was read
    stored = index.embeddings()
    assert len(stored) == 280 and not set(map(str, deleted)) & set(stored)
    fresh = demo_encoder.encode_image([str(p) for p in changed[:10]])
    got = np.stack([stored[str(p)] for p in changed[:10]])
    assert (fresh * got).sum(1).min() > 0.999  # the new pictures' embeddings (float16 storage)


def test_a_broken_file_is_retried_only_after_it_changes(tmp_path, demo_encoder):
    root = tmp_path / "photos"
    root.mkdir()
    bad = root / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    enc = CountingEncoder(demo_encoder)
    index = PhotoIndex(tmp_path / "photos.db", enc)
    assert [p for p, _ in index.update([root]).failed] == [str(bad)]
    enc.images = 0
    assert index.update([root]).still_broken == 1 and enc.images == 0
    mixed_size_image(np.random.default_rng(0)).save(bad, "JPEG")
    report = index.update([root])
    assert report.added == [str(bad)] and index.failures() == [] and len(index) == 1


def test_deletion_is_limited_to_the_folders_given(tmp_path, demo_encoder):
    a, b = make_tree(tmp_path / "a", 5, 0)[0], make_tree(tmp_path / "b", 5, 0, seed=1)[0]
    index = PhotoIndex(tmp_path / "photos.db", demo_encoder)
    index.update([tmp_path / "a"])
    index.update([tmp_path / "b"])
    assert len(index) == 10
    a[0].unlink()
    assert index.update([tmp_path / "b"]).deleted == []
    assert index.update([tmp_path / "a"]).deleted == [str(a[0])]
    assert index.remove([tmp_path / "b"]) == sorted(map(str, b)) and len(index) == 4


def test_a_file_name_that_is_not_utf8_is_listed_not_fatal(tmp_path, demo_encoder):
    root = tmp_path / "photos"
    make_tree(root, 3, 0)
    odd = os.fsdecode(bytes(root) + b"/caf\xe9.jpg")  # Latin-1 bytes from an old camera or archive
    mixed_size_image(np.random.default_rng(0)).save(odd, "JPEG")
    with PhotoIndex(tmp_path / "photos.db", demo_encoder) as index:
        report = index.update([root])
        assert len(report.added) == 3 and len(index) == 3
        assert [p for p, _ in report.failed] == [f"{root}/caf\\udce9.jpg"]
        assert "not valid UTF-8" in report.failed[0][1]
