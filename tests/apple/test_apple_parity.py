"""Apple `ml-mobileclip` checkpoints: key layout and torch parity with the reference fixtures, before and after reparameterization."""
from __future__ import annotations

import numpy as np
import pytest

from tests.reference_fixtures import (FIXTURES, LARGE, assert_parity, fixture_images, fixture_state_dict,
                                      fixture_tokens, load_fixture)

torch = pytest.importorskip("torch", reason="the export side needs torch")
apple = pytest.importorskip("export.models.apple", reason="needs the export dependencies (timm)")

APPLE_FIXTURES = [
    pytest.param(stem, model_id, id=model_id, marks=[pytest.mark.slow] if model_id in LARGE else [])
    for stem, (model_id, layout) in FIXTURES.items() if layout == "ml-mobileclip"
]


def _is_conv_model(model_id: str) -> bool:
    return apple.ARCHS[model_id].timm_image.startswith("fastvit")


@pytest.mark.parametrize("stem, model_id", [p.values for p in APPLE_FIXTURES], ids=[p.id for p in APPLE_FIXTURES])
def test_checkpoint_keys_match_reference(stem: str, model_id: str) -> None:
    fx = load_fixture(stem)
    expected = {key: tuple(shape) for key, shape, _ in fx["state_dict"]}
    got = dict(apple.apple_checkpoint_keys(model_id))
    assert len(got) == len(apple.apple_checkpoint_keys(model_id)), "duplicate keys"
    assert sorted(set(expected) - set(got)) == [], "keys of the real checkpoint that the module does not expect"
    assert sorted(set(got) - set(expected)) == [], "keys the module expects that the real checkpoint lacks"
    assert {k: v for k, v in got.items() if expected[k] != v} == {}, "mis-shaped keys"


@pytest.mark.parametrize("stem, model_id", APPLE_FIXTURES)
def test_reference_parity_before_and_after_reparameterize(stem: str, model_id: str) -> None:
    fx = load_fixture(stem)
    model = apple.build_apple_model(model_id)
    state = apple.convert_apple_state_dict(model_id, fixture_state_dict(fx))
    model.load_state_dict(state, strict=True)
    images, ids = torch.from_numpy(fixture_images(fx)), torch.from_numpy(fixture_tokens(fx))
    want_image, want_text = np.asarray(fx["image_embeddings"]), np.asarray(fx["text_embeddings"])
    rows = _is_conv_model(model_id)  # the ViT's two test images give almost equal rows (README)
    with torch.no_grad():
        for stage in ("train-time", "reparameterized"):
            if stage == "reparameterized":
                model.reparameterize()
                model.reparameterize()  # a second call must change nothing
                assert not [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
            assert_parity(model.encode_image(images).numpy(), want_image, f"{model_id} {stage} image", row_difference=rows)
            assert_parity(model.encode_text(ids).numpy(), want_text, f"{model_id} {stage} text")


def test_converter_keeps_unknown_keys_for_the_strict_loader() -> None:
    # a foreign checkpoint (S2 keys given as S0) must be reported by load_state_dict, not silently dropped
    s2 = {k: torch.zeros(s) for k, s in apple.apple_checkpoint_keys("mobileclip-s2")}
    converted = apple.convert_apple_state_dict("mobileclip-s0", s2)
    with torch.device("meta"):
        s0 = apple.build_apple_model("mobileclip-s0")
    unexpected = set(converted) - set(s0.state_dict())
    assert any(k.startswith("image_encoder.") for k in unexpected)


def test_unknown_model_id_is_a_clear_error() -> None:
    from export.registry import UnknownModelError

    with pytest.raises(UnknownModelError, match="mobileclip-s9"):
        apple.build_apple_model("mobileclip-s9")
    with pytest.raises(UnknownModelError, match="known: mobileclip-s0"):
        apple.apple_checkpoint_keys("mobileclip2-s0")
