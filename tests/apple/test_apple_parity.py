"""Apple `ml-mobileclip` checkpoints: key layout, torch parity with the reference fixtures before and after
reparameterization, and parity with an independent reference network on image files under input-sensitive weights."""
from __future__ import annotations

import numpy as np
import pytest

from tests.image_parity import (CENTERED_MIN, MIN_INPUT_FRACTION, assert_centered, assert_image_parity, describe,
                                figures, input_fraction, load_image_files, write_image_files)
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
            got_text = model.encode_text(ids).numpy()
            assert_parity(got_text, want_text, f"{model_id} {stage} text")
            assert_centered(got_text, want_text, f"{model_id} {stage} text")
    # the fixture weights make the captions' embeddings (and the conv models' two images) differ
    assert input_fraction(want_text) >= MIN_INPUT_FRACTION
    assert not rows or input_fraction(want_image) >= MIN_INPUT_FRACTION


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


# ---------------------------------------------------------------- image files, input-sensitive weights
N_IMAGES = 5  # photos (and drawn pictures) written as files; batch 1, as a phone runs them


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    return write_image_files(tmp_path_factory.mktemp("parity_images"), limit=N_IMAGES)


def _one_by_one(encode, x: "torch.Tensor") -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([encode(x[i:i + 1]).numpy() for i in range(len(x))])


def test_vit_b_matches_apples_network_on_image_files(image_files, capsys) -> None:
    """MobileCLIP-B from an Apple-layout file equals Apple's ViT (padded conv stem) under input-sensitive weights.

    The reference (tests/apple/apple_vit_reference.py) is plain torch on Apple's keys; timm's unpadded stem
    is the control the comparison must reject.
    """
    from export.api import build_model
    from export.models.vit_mci import stem_of
    from export.random_init import input_sensitive_state_dict
    from tests.apple.apple_vit_reference import apple_vit_encode_image

    sd = input_sensitive_state_dict("mobileclip-b", seed=0, image_only=True)
    x = torch.from_numpy(load_image_files(image_files, 224))
    model = build_model("mobileclip-b", sd)  # the export path: layout check, key conversion, reparameterization
    assert stem_of(model.image_encoder) == "padded"
    ours = _one_by_one(model.encode_image, x)
    del model
    want = apple_vit_encode_image(sd, x).numpy()
    found = assert_image_parity(ours, want, "Apple-layout MobileCLIP-B image tower vs Apple's network")
    unpadded = figures(ours, apple_vit_encode_image(sd, x, pad_stem=False).numpy())
    assert unpadded["centered"] < CENTERED_MIN, f"the test cannot tell the two stems apart: {unpadded}"
    with capsys.disabled():
        print("\n" + describe("mobileclip-b ml-mobileclip torch image vs Apple", found))
        print(describe("mobileclip-b ml-mobileclip torch image vs Apple with timm's unpadded stem (control)", unpadded))


@pytest.mark.parametrize("model_id", ["mobileclip-b", "mobileclip-b-lt"])
def test_vit_b_models_build_apples_padded_stem(model_id: str) -> None:
    from export.models.vit_mci import stem_of

    with torch.device("meta"):
        assert stem_of(apple.build_apple_model(model_id).image_encoder) == "padded"
        assert stem_of(apple.build_apple_model(model_id, "unpadded").image_encoder) == "unpadded"


@pytest.mark.parametrize("model_id", [pytest.param("mobileclip-s0", id="s0"),
                                      pytest.param("mobileclip-s1", id="s1", marks=pytest.mark.slow),
                                      pytest.param("mobileclip-s2", id="s2", marks=pytest.mark.slow)])
def test_mci_matches_timms_own_apple_loader_on_image_files(model_id: str, image_files, capsys) -> None:
    """S0/S1/S2 from an Apple-layout file vs timm's FastViT-MCi loaded by timm's own converter of Apple's file."""
    import timm
    from timm.models.fastvit import checkpoint_filter_fn

    from export.api import build_model
    from export.random_init import input_sensitive_state_dict

    sd = input_sensitive_state_dict(model_id, seed=0, image_only=True)
    x = torch.from_numpy(load_image_files(image_files, 256))
    ours = _one_by_one(build_model(model_id, sd).encode_image, x)
    reference = timm.create_model(apple.ARCHS[model_id].timm_image, num_classes=512).eval()
    reference.load_state_dict(checkpoint_filter_fn(sd, reference), strict=True)
    with torch.no_grad():
        want = reference(x).numpy()
    found = assert_image_parity(ours, want, f"Apple-layout {model_id} image tower vs timm")
    with capsys.disabled():
        print("\n" + describe(f"{model_id} ml-mobileclip torch image vs timm's loader", found))
