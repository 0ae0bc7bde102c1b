"""Bundle files that resolve outside the bundle folder are refused, and no message tells anything about them."""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from edgeclip import Encoder
from edgeclip.bundle import load_bundle
from edgeclip.cli import main
from edgeclip.errors import BundleError

from tests.hostile.conftest import copy_bundle


def _point_outside(bundle, name, target):
    (bundle / name).unlink()
    os.symlink(target, bundle / name)


@pytest.mark.parametrize("name", ["image.onnx", "tokenizer.json"])
def test_symlink_to_an_identical_outside_copy_is_refused(tiny, tmp_path, name):
    """Even with the right sha256 (the outside file is a copy), a file outside the folder is not part of the bundle."""
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    shutil.copyfile(tiny / name, outside)
    bad = copy_bundle(tiny, tmp_path / "b")
    _point_outside(bad, name, outside)
    for verify in (True, False):
        with pytest.raises(BundleError, match="outside the bundle") as err:
            load_bundle(bad, verify=verify)
        assert str(outside) not in str(err.value) and "elsewhere" not in str(err.value)
    with pytest.raises(BundleError, match="outside the bundle"):
        Encoder(bad, providers="cpu", threads=1)


def test_symlink_to_a_secret_reveals_nothing(tiny, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is swordfish\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    bad = copy_bundle(tiny, tmp_path / "b")
    _point_outside(bad, "tokenizer.json", secret)
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "outside the bundle" in err
    for leak in (digest[:6], str(secret), "secret.txt", "swordfish"):
        assert leak not in err


def test_symlink_to_a_dangling_or_relative_outside_target(tiny, tmp_path):
    bad = copy_bundle(tiny, tmp_path / "b")
    _point_outside(bad, "text.onnx", "../../nowhere/text.onnx")
    with pytest.raises(BundleError, match="outside the bundle") as err:
        load_bundle(bad, verify=False)
    assert "nowhere" not in str(err.value)


def test_symlinks_inside_the_bundle_and_a_symlinked_bundle_folder_still_load(tiny, tmp_path):
    good = copy_bundle(tiny, tmp_path / "b")
    (good / "real").mkdir()
    os.replace(good / "image.onnx", good / "real" / "image.onnx")
    os.symlink("real/image.onnx", good / "image.onnx")
    os.symlink(good, tmp_path / "link-to-bundle")
    assert load_bundle(tmp_path / "link-to-bundle").embed_dim == 16
    assert Encoder(tmp_path / "link-to-bundle", providers="cpu", threads=1).encode_text("a").shape == (1, 16)
