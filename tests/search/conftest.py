"""Bundles for the photo-index tests: the demo model (knows coloured shapes) and a tiny random one (another bundle)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from tiny_bundle import make_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    """The committed demo checkpoint exported to a bundle (python -m export --model demo), once per session."""
    from export.api import export_bundle

    return export_bundle("demo", tmp_path_factory.mktemp("search-bundles") / "demo")


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory) -> Path:
    """A tiny random bundle: a different model whose embeddings must never mix with the demo's."""
    return make_tiny_bundle(tmp_path_factory.mktemp("search-other") / "tiny", image_size=32, embed_dim=16)


@pytest.fixture(scope="session")
def demo_encoder(demo_bundle):
    from edgeclip import Encoder

    return Encoder(demo_bundle, providers="cpu", threads=1)
