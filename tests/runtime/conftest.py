"""Shared fixtures of the runtime tests: tiny bundles (dynamic, fixed-batch, one-tower) built once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

FIXED_BATCH = 3


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict:
    """name -> bundle dir: 'dynamic' and 'fixed' (same weights), 'image_only', 'text_only'."""
    from tiny_bundle import make_tiny_bundle  # needs onnx (skips without it); tests without bundles still run

    root = tmp_path_factory.mktemp("bundles")
    return {
        "dynamic": make_tiny_bundle(root / "dynamic"),
        "fixed": make_tiny_bundle(root / "fixed", batch=FIXED_BATCH),
        "image_only": make_tiny_bundle(root / "image_only", towers=("image",)),
        "text_only": make_tiny_bundle(root / "text_only", towers=("text",)),
    }


@pytest.fixture(scope="session")
def encoder(bundles):
    from edgeclip import Encoder

    return Encoder(bundles["dynamic"], providers="cpu", threads=1)


@pytest.fixture(scope="session")
def fixed_encoder(bundles):
    from edgeclip import Encoder

    return Encoder(bundles["fixed"], providers="cpu", threads=1)

