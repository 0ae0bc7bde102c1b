"""`hf-hub:ORG/REPO` bundles: offline from a Hugging Face cache laid out by the test (tests/hub/hub_cache.py), and
real downloads through huggingface_hub from a local stand-in for the Hub (tests/hub/local_hub.py), no network."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.hub.hub_cache import lay_out_cache, repo_folder
from tests.runtime.tiny_bundle import make_tiny_bundle

pytest.importorskip("huggingface_hub", reason="the hub extra (in dev) installs huggingface_hub")
REPO_ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("hub_src") / "tiny-int8", image_size=32, embed_dim=16)


@pytest.fixture()
def cache(tmp_path, monkeypatch, local_bundle) -> Path:
    """A Hub cache holding org/tiny (complete) and org/partial (text.onnx never arrived); offline."""
    root = tmp_path / "hf" / "hub"
    lay_out_cache(root, "org/tiny", local_bundle, commit=COMMIT)
    lay_out_cache(root, "org/partial", local_bundle, commit=COMMIT, skip=("text.onnx",))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_encoder_by_name_matches_the_local_bundle(cache, local_bundle):
    from edgeclip import Encoder
    from edgeclip.bundle import load_bundle

    bundle = load_bundle("hf-hub:org/tiny")
    assert bundle.root == repo_folder(cache, "org/tiny") / "snapshots" / COMMIT
    assert bundle.manifest == load_bundle(local_bundle).manifest
    pixels = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    by_name, local = Encoder("hf-hub:org/tiny", threads=1), Encoder(local_bundle, threads=1)
    np.testing.assert_array_equal(by_name.encode_image(list(pixels)), local.encode_image(list(pixels)))
    np.testing.assert_array_equal(by_name.encode_text(["a cat", "a dog"]), local.encode_text(["a cat", "a dog"]))
    assert load_bundle(f"hf-hub:org/tiny@{COMMIT}").root == bundle.root  # a pinned revision


def test_missing_repo_incomplete_download_and_bad_names_are_clear_errors(cache):
    _refused({"hf-hub:org/nothing": r"hf-hub:org/nothing .*offline.*not in the local cache",
              "hf-hub:org/partial": r"hf-hub:org/partial .*incomplete download, text.onnx is not in the local",
              "hf-hub:org/tiny@v9": r"hf-hub:org/tiny@v9 .*not in the local cache"})
    _refused({bad: "not a Hub bundle name" for bad in ("hf-hub:", "hf-hub:org", "hf-hub:org/a/b", "hf-hub:../etc",
                                                       "hf-hub:org/tiny@")})


def _refused(cases: dict) -> None:
    """Each bundle name fails to load with a BundleError matching its pattern."""
    from edgeclip.bundle import load_bundle
    from edgeclip.errors import BundleError

    for ref, pattern in cases.items():
        with pytest.raises(BundleError, match=pattern):
            load_bundle(ref)


def test_tampered_cached_file_is_refused(cache):
    from edgeclip import Encoder
    from edgeclip.errors import BundleError

    blob = (repo_folder(cache, "org/tiny") / "snapshots" / COMMIT / "image.onnx").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="image.onnx does not match its sha256"):
        Encoder("hf-hub:org/tiny")


def test_manifest_naming_a_file_outside_the_bundle_is_refused_before_any_fetch(cache, tmp_path):
    from edgeclip.bundle import load_bundle
    from edgeclip.errors import BundleError

    evil = tmp_path / "evil"
    evil.mkdir()
    manifest = json.loads((repo_folder(cache, "org/tiny") / "snapshots" / COMMIT / "manifest.json").read_text())
    manifest["towers"]["image"]["file"] = "../../../../secret.onnx"
    (evil / "manifest.json").write_text(json.dumps(manifest))
    lay_out_cache(cache, "org/evil", evil, commit=COMMIT)
    with pytest.raises(BundleError, match="hf-hub:org/evil: .*points outside the bundle"):
        load_bundle("hf-hub:org/evil")


def test_without_huggingface_hub_the_error_says_what_to_install(cache, monkeypatch):
    from edgeclip.bundle import load_bundle
    from edgeclip.errors import BundleError

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as when the extra is not installed
    with pytest.raises(BundleError, match=r"pip install huggingface_hub"):
        load_bundle("hf-hub:org/tiny")


def test_a_local_bundle_path_loads_without_huggingface_hub(local_bundle, monkeypatch):
    from edgeclip.bundle import load_bundle

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert load_bundle(local_bundle).root == local_bundle
    assert load_bundle(str(local_bundle)).root == local_bundle


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeclip", *args], capture_output=True, text=True, timeout=180,
                          cwd=REPO_ROOT, env=env)


def test_cli_info_and_classify_by_name_work_offline(cache, tmp_path, local_bundle):
    from PIL import Image

    image = tmp_path / "img.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(image)
    env = {**os.environ, "HF_HOME": str(cache.parent), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)

    info = _cli(["--json", "info", "hf-hub:org/tiny"], env)
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert shown["verified"] is True and shown["bundle"].endswith(f"snapshots/{COMMIT}")
    assert shown["model_id"] == json.loads((local_bundle / "manifest.json").read_text())["model_id"]

    by_name = _cli(["--json", "classify", "hf-hub:org/tiny", str(image), "--labels", "cat,dog,car"], env)
    local = _cli(["--json", "classify", str(local_bundle), str(image), "--labels", "cat,dog,car"], env)
    assert by_name.returncode == 0 and local.returncode == 0, by_name.stderr + local.stderr
    assert json.loads(by_name.stdout)["results"] == json.loads(local.stdout)["results"]

    missing = _cli(["info", "hf-hub:org/nothing"], env)
    assert missing.returncode == 1 and "hf-hub:org/nothing" in missing.stderr and "Traceback" not in missing.stderr


@pytest.fixture()
def local_hub(tmp_path, monkeypatch, local_bundle):
    """org/tiny (with a model card the manifest does not name) and org/broken (no image.onnx) on a local Hub."""
    import shutil

    from tests.hub.local_hub import LocalHub

    card = tmp_path / "repo"
    shutil.copytree(local_bundle, card)
    (card / "README.md").write_text("# tiny bundle\n")
    broken = tmp_path / "broken"
    shutil.copytree(local_bundle, broken)
    (broken / "image.onnx").unlink()
    hub = LocalHub()
    hub.add("org/tiny", card, COMMIT)
    hub.add("org/broken", broken, COMMIT)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("EDGECLIP_OFFLINE", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import: an earlier offline test in this process must not leak
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    yield hub
    hub.close()


def test_download_fetches_only_the_manifests_files_then_works_offline(local_hub, tmp_path, monkeypatch):
    from edgeclip.bundle import load_bundle

    bundle = load_bundle("hf-hub:org/tiny")
    fetched = sorted({path.rsplit("/", 1)[1] for method, path in local_hub.requests if method == "GET"})
    assert fetched == ["image.onnx", "manifest.json", "text.onnx", "tokenizer.json"]  # not README.md
    assert all(f"/resolve/{COMMIT}/" in path for _, path in local_hub.requests if "manifest" not in path)
    assert bundle.root == repo_folder(tmp_path / "cache", "org/tiny") / "snapshots" / COMMIT
    local_hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_bundle("hf-hub:org/tiny").root == bundle.root and local_hub.requests == []


def test_unknown_repo_revision_and_interrupted_download_online_then_offline(local_hub, monkeypatch):
    _refused({"hf-hub:org/nothing": r"hf-hub:org/nothing \(Hugging Face Hub\): no such model repository",
              "hf-hub:org/tiny@v9": r"revision 'v9' does not exist",
              "hf-hub:org/broken": r"image.onnx is named in manifest.json but missing from the repository"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what the failed download left in the cache is not a bundle
    _refused({"hf-hub:org/broken": r"incomplete download, image.onnx is not in the local cache"})
