"""Bundle loading: version check and sha256 of every named file, each failure naming the bad file."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeclip import Encoder
from edgeclip.bundle import FORMAT_VERSION, MANIFEST_NAME, load_bundle, sha256_file
from edgeclip.errors import BundleError

from tiny_bundle import make_tiny_bundle


@pytest.fixture
def bundle(bundles, tmp_path):
    """A private copy of the dynamic tiny bundle that a test may damage."""
    return shutil.copytree(bundles["dynamic"], tmp_path / "b")


def _edit_manifest(root, **changes):
    path = root / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))
    return manifest


def test_loads_and_exposes_paths(bundle):
    b = load_bundle(bundle)
    assert b.image_path == bundle / "image.onnx" and b.text_path == bundle / "text.onnx"
    assert b.tokenizer_path == bundle / "tokenizer.json"
    assert b.manifest["format_version"] == FORMAT_VERSION
    assert sorted(name for name, _ in b.files()) == ["image.onnx", "text.onnx", "tokenizer.json"]
    assert all(sha256_file(bundle / name) == digest for name, digest in b.files())


def test_newer_format_version_is_refused(bundle):
    _edit_manifest(bundle, format_version=FORMAT_VERSION + 1)
    with pytest.raises(BundleError, match=f"format version {FORMAT_VERSION + 1}.*upgrade edgeclip"):
        load_bundle(bundle)


@pytest.mark.parametrize("name", ["image.onnx", "text.onnx", "tokenizer.json"])
def test_missing_file_is_named(bundle, name):
    (bundle / name).unlink()
    with pytest.raises(BundleError, match=f"file {name} is missing"):
        load_bundle(bundle)


@pytest.mark.parametrize("name", ["image.onnx", "text.onnx", "tokenizer.json"])
def test_tampered_file_is_named(bundle, name):
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"file {name} does not match its sha256"):
        load_bundle(bundle)


@pytest.mark.parametrize("name", ["image.onnx", "text.onnx"])
def test_truncated_file_is_named_and_encoder_refuses(bundle, name):
    data = (bundle / name).read_bytes()
    (bundle / name).write_bytes(data[: len(data) // 3])
    with pytest.raises(BundleError, match=f"file {name} does not match"):
        Encoder(bundle)


def test_unverified_truncated_tower_still_gives_a_clear_error(bundle):
    data = (bundle / "image.onnx").read_bytes()
    (bundle / "image.onnx").write_bytes(data[:100])
    with pytest.raises(BundleError, match="image.onnx"):
        Encoder(bundle, verify=False, towers="image")  # named towers open now
    enc = Encoder(bundle, verify=False)  # the others on first use
    with pytest.raises(BundleError, match="image.onnx"):
        enc.encode_image(np.zeros((8, 8, 3), np.uint8))


def test_extra_files_are_verified(bundle):
    (bundle / "report.json").write_text("{}")
    _edit_manifest(bundle, extra_files={"report.json": sha256_file(bundle / "report.json")})
    load_bundle(bundle)
    (bundle / "report.json").write_text("{ }")
    with pytest.raises(BundleError, match="report.json"):
        load_bundle(bundle)


@pytest.mark.parametrize("setup, message", [
    (lambda b: (b / MANIFEST_NAME).unlink(), "manifest.json is missing"),
    (lambda b: (b / MANIFEST_NAME).write_text("{not json"), "cannot parse"),
    (lambda b: (b / MANIFEST_NAME).write_text("[1, 2]"), "JSON object"),
    (lambda b: _edit_manifest(b, format_version="1"), "not an integer"),
    (lambda b: _edit_manifest(b, format="something-else"), "expected 'edgeclip-bundle'"),
    (lambda b: _edit_manifest(b, towers={}), "at least one"),
    (lambda b: _edit_manifest(b, extra_files={"../escape.txt": "00"}), "outside the bundle"),
])
def test_malformed_manifests(bundle, setup, message):
    setup(bundle)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_not_a_directory(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        load_bundle(tmp_path / "file")


def test_manifest_that_disagrees_with_the_graph_is_refused(tmp_path):
    root = make_tiny_bundle(tmp_path / "b", towers=("image",), image_size=32)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["preprocess"]["crop_size"] = manifest["preprocess"]["resize"] = 24
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="expects 32x32 inputs but preprocess crops to 24"):
        Encoder(root, towers="image")
    with pytest.raises(BundleError, match="expects 32x32 inputs but preprocess crops to 24"):
        Encoder(root).encode_image(np.zeros((40, 40, 3), np.uint8))  # towers not named: checked on first use
