"""Input-sensitive random checkpoints: the loader accepts them and embeddings depend on the input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from quantize_fixtures import make_samples

torch = pytest.importorskip("torch", reason="making a checkpoint needs torch (build side)")


def test_s0_checkpoint_keeps_ten_percent_of_the_norm_after_centering(tmp_path):
    from edgeclip.preprocess import preprocess_image
    from edgeclip.tokenizer import load_tokenizer
    from export.random_init import MIN_INPUT_FRACTION, check_input_sensitive, make_input_sensitive_checkpoint

    torch.set_num_threads(1)
    path = make_input_sensitive_checkpoint("s0", tmp_path / "s0.pt", seed=0)
    sd = torch.load(path, weights_only=True)
    bn = [k for k in sd if k.endswith("running_var")]
    assert bn and all(float(sd[k].min()) >= 1.0 for k in bn) and float(sd[bn[0]].std()) > 0.05
    scales = [k for k in sd if k.endswith("layer_scale")]
    assert scales and all(abs(float(sd[k].mean()) - 0.1) < 0.02 for k in scales)
    spec = {"size": 256, "resize": 256, "resize_mode": "shortest", "interpolation": "bilinear", "crop": "center",
            "crop_size": 256, "mean": [0.0] * 3, "std": [1.0] * 3}
    samples = make_samples(6, seed=4, size=(64, 80))
    images = np.stack([preprocess_image(Image.open(io.BytesIO(s.image)), spec) for s in samples])
    ids = load_tokenizer()([s.caption for s in samples])
    frac = check_input_sensitive("s0", path, images, ids)
    assert frac["image"] >= MIN_INPUT_FRACTION and frac["text"] >= MIN_INPUT_FRACTION
