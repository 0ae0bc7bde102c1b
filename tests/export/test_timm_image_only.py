"""Apple's timm image-only releases (apple/mobileclip_*_timm) -> image-only bundles, checked against timm itself.

Each case writes a release folder as the Hub serves it (config.json + weights in the release's file format) with
input-sensitive random weights for timm's model, exports it, and compares the bundle's embeddings of image files
(edgeclip's preprocessing from the manifest) with timm's model on timm's own transform from that config.json.
CI runs S0 (safetensors, through `python -m export --model s0`) and B (LT) (pytorch_model.bin); S1, S2 and B take
the same code path at other sizes and are marked slow (`make test-slow`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import save_state_dict
from tests.image_parity import assert_image_parity, describe, write_image_files

torch = pytest.importorskip("torch", reason="the export side needs torch")
timm = pytest.importorskip("timm", reason="the export extra installs timm")

N_IMAGES = 4
# the releases' config.json pretrained_cfg (huggingface.co/apple/mobileclip_*_timm): input size, crop_pct, tag
RELEASES = {
    "mobileclip-s0-timm": ("fastvit_mci0", 256, 0.95, "apple_mclip"),
    "mobileclip-s1-timm": ("fastvit_mci1", 256, 0.95, "apple_mclip"),
    "mobileclip-s2-timm": ("fastvit_mci2", 256, 0.95, "apple_mclip"),
    "mobileclip-b-timm": ("vit_base_mci_224", 224, 0.9, "apple_mclip"),
    "mobileclip-b-lt-timm": ("vit_base_mci_224", 224, 0.9, "apple_mclip_lt"),
}


def release_config(model_id: str) -> dict:
    """A config.json in the layout of Apple's timm releases."""
    arch, size, crop_pct, tag = RELEASES[model_id]
    return {"architecture": arch, "num_classes": 512, "num_features": 768 if arch.startswith("vit") else 1024,
            "global_pool": "token" if arch.startswith("vit") else "avg",
            "pretrained_cfg": {"tag": tag, "custom_load": False, "input_size": [3, size, size],
                               "fixed_input_size": arch.startswith("vit"), "interpolation": "bicubic",
                               "crop_pct": crop_pct, "crop_mode": "center", "mean": [0.0, 0.0, 0.0],
                               "std": [1.0, 1.0, 1.0], "num_classes": 512}}


def write_release(model_id: str, folder: Path, filename: str) -> Path:
    """config.json + input-sensitive random weights saved as `filename` (safetensors or torch.save)."""
    from export.random_init import input_sensitive_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(release_config(model_id), indent=2))
    return save_state_dict(input_sensitive_state_dict(model_id), folder / filename)


@torch.no_grad()
def timm_embeddings(model_id: str, checkpoint: Path, images: list[Path]) -> np.ndarray:
    """timm's model and timm's eval transform built from the release's config.json."""
    from PIL import Image

    from export.checkpoint import read_checkpoint

    cfg = json.loads((checkpoint.parent / "config.json").read_text())
    pre = cfg["pretrained_cfg"]
    model = timm.create_model(cfg["architecture"], num_classes=cfg["num_classes"]).eval()
    model.load_state_dict(read_checkpoint(checkpoint)[0], strict=True)
    tf = timm.data.create_transform(input_size=tuple(pre["input_size"]), interpolation=pre["interpolation"],
                                    mean=tuple(pre["mean"]), std=tuple(pre["std"]), crop_pct=pre["crop_pct"],
                                    crop_mode=pre["crop_mode"])
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images])
    return model(x).numpy()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return write_image_files(tmp_path_factory.mktemp("timm_images"), limit=N_IMAGES)


@pytest.fixture(scope="module")
def s0_release(tmp_path_factory) -> Path:
    return write_release("mobileclip-s0-timm", tmp_path_factory.mktemp("s0") / "mobileclip_s0_timm",
                         "model.safetensors")


@pytest.fixture(scope="module")
def s0_bundle(s0_release, tmp_path_factory) -> Path:
    """`python -m export --model s0 --checkpoint model.safetensors`: the timm file is detected, s0-timm exported."""
    from export.cli import main

    out = tmp_path_factory.mktemp("s0_bundle") / "bundle"
    assert main(["--model", "s0", "--checkpoint", str(s0_release), "--out", str(out)]) == 0
    return out


def _check_bundle(model_id: str, bundle: Path, checkpoint: Path, images: list[Path], capsys) -> None:
    from edgeclip import Encoder
    from edgeclip.errors import BundleError

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model_id"] == model_id and list(manifest["towers"]) == ["image"]
    assert manifest["tokenizer"] is None and manifest["source_checkpoint"]["layout"] == "timm"
    arch, size, crop_pct, _ = RELEASES[model_id]
    assert manifest["image_stem"] == ("unpadded" if arch.startswith("vit_") else None)  # the network timm builds
    pre = manifest["preprocess"]
    assert (pre["crop_size"], pre["resize"], pre["interpolation"]) == (size, int(size / crop_pct), "bicubic")
    enc = Encoder(bundle, providers="cpu", threads=2, preprocess_mode="exact")  # torchvision's pixels, as timm
    ours = enc.encode_image([str(p) for p in images])
    with pytest.raises(BundleError, match="no text tower"):
        enc.encode_text("a photo")
    ref = timm_embeddings(model_id, checkpoint, images)
    figures = assert_image_parity(ours, ref / np.linalg.norm(ref, axis=1, keepdims=True), f"{model_id} bundle vs timm")
    with capsys.disabled():
        print("\n" + describe(f"{model_id} ({checkpoint.name}) bundle vs timm, {len(images)} image files", figures))


def test_s0_timm_safetensors_with_model_s0_exports_an_image_only_bundle(s0_bundle, s0_release, images, capsys):
    _check_bundle("mobileclip-s0-timm", s0_bundle, s0_release, images, capsys)


@pytest.mark.parametrize("model_id, filename", [
    pytest.param("mobileclip-b-lt-timm", "pytorch_model.bin", id="b-lt-timm"),
    pytest.param("mobileclip-s1-timm", "pytorch_model.bin", id="s1-timm", marks=pytest.mark.slow),
    pytest.param("mobileclip-s2-timm", "model.safetensors", id="s2-timm", marks=pytest.mark.slow),
    pytest.param("mobileclip-b-timm", "model.safetensors", id="b-timm", marks=pytest.mark.slow),
])
def test_timm_release_bundle_matches_timm(model_id, filename, tmp_path, images, capsys):
    from export.api import export_bundle

    ckpt = write_release(model_id, tmp_path / model_id, filename)
    bundle = export_bundle(model_id, tmp_path / "bundle", checkpoint=ckpt)
    _check_bundle(model_id, bundle, ckpt, images, capsys)


def test_text_tower_request_is_a_clear_error(s0_release, tmp_path, capsys):
    from export.api import export_bundle
    from export.checkpoint import read_checkpoint
    from export.cli import main
    from export.onnx_export import ExportError

    ckpt = save_state_dict(read_checkpoint(s0_release)[0], tmp_path / "pytorch_model.bin")  # the .bin format too
    with pytest.raises(ExportError, match="no text tower"):
        export_bundle("s0", tmp_path / "out", checkpoint=ckpt, towers=("image", "text"))
    assert main(["--model", "s0-timm", "--checkpoint", str(ckpt), "--towers", "text", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "pytorch_model.bin" in err and "no text tower" in err and "No bundle was written" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_timm_layout_is_detected_and_named_for_models_without_a_timm_release(s0_release):
    from export.api import load_checkpoint
    from export.checkpoint import CheckpointError, detect_layout

    ckpt = s0_release
    loaded = load_checkpoint("s0", ckpt)
    assert (loaded.layout, loaded.model_id) == ("timm", "mobileclip-s0-timm")
    assert detect_layout(loaded.state_dict) == "timm"
    with pytest.raises(CheckpointError, match="timm checkpoint, but mobileclip2-s0 .* load as: mobileclip-s0-timm"):
        load_checkpoint("mobileclip2-s0", ckpt)


def test_config_json_of_another_release_is_refused(s0_release, tmp_path):
    import shutil

    from export.checkpoint import CheckpointError, preprocess_for
    from export.registry import get_spec

    ckpt = tmp_path / s0_release.name  # a copy: this test rewrites the config beside it
    shutil.copy(s0_release, ckpt)
    shutil.copy(s0_release.parent / "config.json", tmp_path / "config.json")
    spec = get_spec("s0-timm")
    assert preprocess_for(spec, ckpt) == spec.preprocess  # the release's config says what the registry says
    cfg = release_config("mobileclip-b-timm")
    (ckpt.parent / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="architecture 'vit_base_mci_224'.*input size 224"):
        preprocess_for(spec, ckpt)
    cfg = release_config("mobileclip-s0-timm")
    cfg["pretrained_cfg"]["crop_pct"] = 0.875
    (ckpt.parent / "config.json").write_text(json.dumps(cfg))
    assert preprocess_for(spec, ckpt)["resize"] == int(256 / 0.875)  # the file's config wins over the registry


def test_without_checkpoint_the_timm_release_and_its_config_are_downloaded(tmp_path):
    """No --checkpoint: the weights and the release's config.json come from the Hub (a local stand-in here)."""
    import os
    import subprocess
    import sys

    from tests.hub.local_hub import LocalHub

    cfg = release_config("mobileclip-s0-timm")
    cfg["pretrained_cfg"]["crop_pct"] = 0.875  # unlike the registry: shows the downloaded config is the one used
    release = tmp_path / "release"
    release.mkdir()
    (release / "config.json").write_text(json.dumps(cfg))
    (release / "pytorch_model.bin").write_bytes(b"weights")  # only fetched here, never read
    (release / "README.md").write_text("card")
    hub = LocalHub()
    hub.add("apple/mobileclip_s0_timm", release, "f" * 40)
    code = ("from export.checkpoint import preprocess_for, resolve_checkpoint; from export.registry import get_spec; "
            "spec = get_spec('s0-timm'); path = resolve_checkpoint(spec); "
            "print(path.name, preprocess_for(spec, path)['resize'])")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "EDGECLIP_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, EDGECLIP_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                              cwd=Path(__file__).resolve().parents[2])
    finally:
        hub.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["pytorch_model.bin", str(int(256 / 0.875))]
    got = sorted(p.name for p in (tmp_path / "home" / "checkpoints" / "mobileclip-s0-timm").iterdir() if p.is_file())
    assert got == ["config.json", "pytorch_model.bin"]
