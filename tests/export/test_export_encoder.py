"""An exported S0 bundle in `edgeclip.Encoder` matches torch fed with torchvision-preprocessed pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")


def _images(tmp_path):
    """Two photos-like files of different sizes and aspect ratios (resize + crop both matter)."""
    rng = np.random.default_rng(1)
    paths = []
    for k, (w, h) in enumerate([(320, 480), (640, 300)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / (9 + 4 * k)), np.cos(yy / (13 + k)), np.sin((xx + yy) / 21)], -1)
        img = (127 + 100 * base + rng.normal(0, 10, (h, w, 3))).clip(0, 255).astype(np.uint8)
        path = tmp_path / f"img{k}.{'png' if k == 0 else 'jpg'}"
        Image.fromarray(img).save(path, quality=95)
        paths.append(path)
    return paths


def test_encoder_matches_torch_with_torchvision_preprocessing(s0_bundle, s0_checkpoint, tmp_path):
    from torchvision import transforms

    from edgeclip import Encoder
    from export.api import build_model

    pre = json.loads((s0_bundle / "manifest.json").read_text())["preprocess"]
    tv = transforms.Compose([transforms.Resize(pre["resize"], interpolation=transforms.InterpolationMode.BILINEAR),
                             transforms.CenterCrop(pre["crop_size"]), transforms.ToTensor(),
                             transforms.Normalize(pre["mean"], pre["std"])])
    paths = _images(tmp_path)
    model = build_model("s0", s0_checkpoint)
    with torch.no_grad():
        ref = model.encode_image(torch.stack([tv(Image.open(p).convert("RGB")) for p in paths])).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    got = Encoder(s0_bundle, providers="cpu", threads=1).encode_image([str(p) for p in paths])
    cos = (got * ref).sum(1)
    assert cos.min() >= 0.9999, cos
    d_ref, d_got = ref[1] - ref[0], got[1] - got[0]  # the inputs really are told apart
    assert float(d_ref @ d_got / (np.linalg.norm(d_ref) * np.linalg.norm(d_got))) >= 0.99
