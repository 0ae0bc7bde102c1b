"""Registry consistency: names resolve, and every OpenCLIP entry matches the architecture open_clip builds."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")

from export.registry import LAYOUT_OPEN_CLIP, MODELS, UnknownModelError, resolve_model_id
from tests.reference_fixtures import FIXTURES, load_fixture


def test_short_names_and_open_clip_names_resolve():
    assert [resolve_model_id(n) for n in ("s0", "S1", "s2", "b")] == [f"mobileclip-{n}" for n in ("s0", "s1", "s2", "b")]
    assert resolve_model_id("MobileCLIP2-S0") == "mobileclip2-s0"
    with pytest.raises(UnknownModelError, match="choose one of"):
        resolve_model_id("s5")


def test_fixture_preprocessing_and_sizes_match_registry():
    for stem, (model_id, layout) in FIXTURES.items():
        fx, spec = load_fixture(stem), MODELS[model_id]
        assert layout in spec.layouts
        assert spec.image_size == fx["image_size"] == fx["preprocess"]["center_crop"]
        assert spec.preprocess["mean"] == [float(v) for v in fx["preprocess"]["mean"]]
        assert spec.preprocess["std"] == [float(v) for v in fx["preprocess"]["std"]]
        assert spec.preprocess["interpolation"] == fx["preprocess"]["interpolation"]
        assert spec.embed_dim == len(fx["image_embeddings"][0])


@pytest.mark.parametrize("model_id", [m for m, s in MODELS.items() if LAYOUT_OPEN_CLIP in s.layouts])
def test_open_clip_entries_match_the_built_architecture(model_id):
    from export.models.openclip import build_open_clip_model

    spec = MODELS[model_id]
    model = build_open_clip_model(spec)  # meta device: no memory, no init
    image = sum(p.numel() for p in model.visual.parameters()) / 1e6
    text = sum(p.numel() for p in model.parameters()) / 1e6 - image
    assert abs(image - spec.params_image_m) <= 0.01 * spec.params_image_m + 0.2
    assert abs(text - spec.params_text_m) <= 0.01 * spec.params_text_m + 0.2
    assert int(model.text.text_projection.shape[1]) == spec.embed_dim
    assert all(p.device == torch.device("meta") for p in model.parameters())
