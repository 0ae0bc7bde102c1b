"""Encoder on real bundles made by export.api.export_bundle (the demo model) against the torch model itself."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeclip import Encoder

DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "export" / "weights" / "demo.safetensors"
if not DEMO_WEIGHTS.exists():  # checked before importing torch so the skip costs nothing
    pytest.skip(f"demo weights {DEMO_WEIGHTS} are not trained/shipped yet (python -m export.train_demo)",
                allow_module_level=True)
torch = pytest.importorskip("torch", reason="exporting a real bundle needs the build side (pip install -e '.[export]')")
T = pytest.importorskip("torchvision.transforms", reason="torchvision is the reference transform")

TEXTS = ["a photo of a red circle", "a blue square on a white background", "", "three green triangles"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(torch model, dynamic bundle, fixed batch-2 bundle) of the demo model with its shipped weights."""
    api = pytest.importorskip("export.api", reason="the export side (torch, timm, open_clip: pip install -e '.[export]') is not installed")
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("real")
    dynamic = api.export_bundle("demo", root / "dynamic")
    fixed = api.export_bundle("demo", root / "fixed", batch=2, towers=("image",))
    return api.build_model("demo"), dynamic, fixed


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(3)
    out = []
    for i, (h, w) in enumerate([(80, 64), (64, 64), (50, 90)]):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * (i + 1)) % 256, (y * 3) % 256, ((x + y) * (2 + i)) % 256], -1)
        out.append(Image.fromarray(np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _close(ours: np.ndarray, ref: np.ndarray) -> None:
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.99999, cos
    centered = (ours - ours.mean(0)) - (ref - ref.mean(0))  # the part that depends on each input
    assert np.abs(centered).max() <= 1e-4


def test_demo_bundle_matches_torch(demo):
    model, dynamic, _ = demo
    enc = Encoder(dynamic, providers="cpu", threads=1)
    pictures = _pictures()
    pp = enc.manifest["preprocess"]
    tf = T.Compose([T.Resize(pp["resize"]), T.CenterCrop(pp["crop_size"]), T.ToTensor(), T.Normalize(pp["mean"], pp["std"])])
    with torch.no_grad():
        ref_img = model.encode_image(torch.stack([tf(p) for p in pictures])).numpy()
        ref_txt = model.encode_text(torch.from_numpy(enc.tokenize(TEXTS))).numpy()
    _close(enc.encode_image(pictures), _unit(ref_img))
    _close(enc.encode_text(TEXTS), _unit(ref_txt))


def test_fixed_batch_real_graph_is_padded_and_split(demo):
    _, dynamic, fixed = demo
    pictures = _pictures()
    fixed_enc = Encoder(fixed, providers="auto", threads=1)
    assert fixed_enc.manifest["towers"]["image"]["batch"] == 2
    np.testing.assert_allclose(fixed_enc.encode_image(pictures), Encoder(dynamic, providers="cpu").encode_image(pictures), atol=1e-5)
