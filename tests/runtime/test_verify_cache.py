"""Cached bundle verification: unchanged files are not re-hashed, while truncation and rewrites that keep the
size and restore the mtime are still caught (their ctime moves); verify="full" always re-hashes."""
from __future__ import annotations

import os
import shutil

import pytest

from edgeclip.bundle import load_bundle
from edgeclip.bundle import verify_cache
from edgeclip.errors import BundleError


@pytest.fixture
def bundle(bundles, tmp_path, monkeypatch):
    """A private copy of the tiny bundle and a private $EDGECLIP_HOME; returns (bundle dir, hashed-file log)."""
    monkeypatch.setenv("EDGECLIP_HOME", str(tmp_path / "home"))
    root = shutil.copytree(bundles["dynamic"], tmp_path / "bundle")
    hashed = []
    real = verify_cache.cached_sha256

    def counting(path, hasher=None):
        def wrapped(p):
            hashed.append(os.path.basename(p))
            return hasher(p)
        return real(path, wrapped)

    monkeypatch.setattr(verify_cache, "cached_sha256", counting)
    return root, hashed


def test_unchanged_files_are_hashed_once(bundle):
    root, hashed = bundle
    load_bundle(root)
    first = sorted(hashed)
    assert "image.onnx" in first and "text.onnx" in first
    assert verify_cache.cache_path().is_file()
    hashed.clear()
    load_bundle(root)
    assert hashed == []
    load_bundle(root, verify="full")  # bypasses the cache altogether
    assert hashed == []


def test_truncation_is_caught(bundle):
    root, _ = bundle
    load_bundle(root)
    path = root / "image.onnx"
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(BundleError, match="image.onnx does not match its sha256"):
        load_bundle(root)


def test_a_rewrite_that_keeps_size_and_mtime_is_caught(bundle):
    root, hashed = bundle
    load_bundle(root)
    path = root / "text.onnx"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before; ctime cannot be set back
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    hashed.clear()
    with pytest.raises(BundleError, match="text.onnx does not match its sha256"):
        load_bundle(root)
    assert hashed == ["text.onnx"]


def test_a_copied_bundle_is_hashed_again_and_a_broken_cache_is_ignored(bundle, tmp_path):
    root, hashed = bundle
    load_bundle(root)
    copy = shutil.copytree(root, tmp_path / "copy")
    hashed.clear()
    load_bundle(copy)
    assert "image.onnx" in hashed
    verify_cache.cache_path().write_text("{not json")
    hashed.clear()
    load_bundle(root)
    assert "image.onnx" in hashed


def test_an_unwritable_home_still_verifies(bundle, tmp_path, monkeypatch):
    root, _ = bundle
    monkeypatch.setenv("EDGECLIP_HOME", str(tmp_path / "file-not-folder"))
    (tmp_path / "file-not-folder").write_text("x")
    load_bundle(root)
    with open(root / "image.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="image.onnx"):
        load_bundle(root)


def test_verify_takes_true_full_or_false(bundle):
    root, _ = bundle
    with pytest.raises(BundleError, match="verify must be"):
        load_bundle(root, verify="sometimes")
