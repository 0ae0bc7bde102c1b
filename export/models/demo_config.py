"""The demo model's sizes, preprocessing, layout name and weights path (torch-free: the model registry reads them)."""
from __future__ import annotations

from pathlib import Path

DEMO_IMAGE_SIZE = 96
DEMO_EMBED_DIM = 64
DEMO_CONTEXT_LENGTH = 77
DEMO_PREPROCESS = {
    "size": DEMO_IMAGE_SIZE, "resize": DEMO_IMAGE_SIZE, "resize_mode": "shortest", "interpolation": "bilinear",
    "crop": "center", "crop_size": DEMO_IMAGE_SIZE, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
}
DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "demo.safetensors"
DEMO_LAYOUT = "edgeclip-demo"
DEMO_CONFIG = {
    "image": {"layers": [1, 1, 2, 1], "embed_dims": [16, 32, 64, 128], "mlp_ratios": [3, 3, 3, 3],
              "token_mixers": ["repmixer", "repmixer", "repmixer", "attention"],
              "se_downsamples": [False, False, True, True], "cpe_kernel": 7, "image_size": DEMO_IMAGE_SIZE,
              "layer_scale_init": 0.1},
    "text": {"vocab_size": 49408, "context_length": DEMO_CONTEXT_LENGTH, "dim": 64, "n_heads": 2,
             "n_transformer_layers": 2, "ffn_multiplier": 2.0, "conv_kernel": 11},
    "embed_dim": DEMO_EMBED_DIM,
}
