"""A real MobileCLIP-S0 bundle (exported with the reference fixture's weights) through the Encoder.

Text: tokenizer + text tower + normalization against the reference implementation's own embeddings.
Image: Encoder on photos against the torch model on torchvision-preprocessed photos. Slow (~1 min export).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeclip import Encoder

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch", reason="exporting a real bundle needs the build side (pip install -e '.[export]')")
T = pytest.importorskip("torchvision.transforms", reason="torchvision is the reference transform")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_fixtures import REFERENCE_DIR, fixture_state_dict, load_fixture  # noqa: E402

STEM = "mobileclip-s0.ml-mobileclip"


@pytest.fixture(scope="module")
def s0(tmp_path_factory):
    """(fixture, state_dict, bundle dir) of S0 filled by the reference weight rule."""
    if not (REFERENCE_DIR / f"{STEM}.json").exists():
        pytest.skip(f"reference fixture {STEM}.json not found in {REFERENCE_DIR}")
    api = pytest.importorskip("export.api", reason="the export side (torch, timm, open_clip: pip install -e '.[export]') is not installed")
    torch.set_num_threads(1)
    fx = load_fixture(STEM)
    sd = fixture_state_dict(fx)
    return fx, sd, api.export_bundle("mobileclip-s0", tmp_path_factory.mktemp("s0") / "bundle", checkpoint=sd)


def test_text_matches_reference_embeddings(s0):
    fx, _, bundle = s0
    enc = Encoder(bundle, providers="auto", threads=1)
    np.testing.assert_array_equal(enc.tokenize(fx["captions"]), np.array(fx["tokens"], dtype=np.int64))
    ref = np.array(fx["text_embeddings"], dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ours = enc.encode_text(fx["captions"])
    assert np.abs(ref - ref.mean(0)).max() > 1e-2  # the captions differ enough for the check to mean something
    assert (ours * ref).sum(axis=1).min() >= 0.99999
    np.testing.assert_allclose(ours - ours.mean(0), ref - ref.mean(0), atol=1e-4)


def test_image_matches_torch_on_photos(s0):
    fx, sd, bundle = s0
    from export.api import build_model

    enc = Encoder(bundle, providers="auto", threads=1)
    rng = np.random.default_rng(0)
    photos = []
    for i, (h, w) in enumerate([(300, 260), (256, 256), (200, 410)]):
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * (i + 1)) % 256, (y * 2) % 256, ((x + y) * (3 + i)) % 256], -1)
        photos.append(Image.fromarray(np.clip(base + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)))
    pp = enc.manifest["preprocess"]
    interp = T.InterpolationMode(pp["interpolation"])
    tf = T.Compose([T.Resize(pp["resize"], interpolation=interp), T.CenterCrop(pp["crop_size"]), T.ToTensor(),
                    T.Normalize(pp["mean"], pp["std"])])
    with torch.no_grad():
        ref = build_model("mobileclip-s0", checkpoint=sd).encode_image(torch.stack([tf(p) for p in photos])).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    ours = enc.encode_image(photos)
    assert np.abs(ref - ref.mean(0)).max() > 1e-2  # the photos differ enough for the check to mean something
    assert (ours * ref).sum(axis=1).min() >= 0.99999
    np.testing.assert_allclose(ours - ours.mean(0), ref - ref.mean(0), atol=1e-4)
