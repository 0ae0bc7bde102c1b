"""Parity with the reference implementations.

- Every reference fixture: checkpoint file -> project loader -> torch and exported ONNX reproduce the reference's
  own numbers (raw cosine; centered cosine where the fixture's inputs differ).
- Every variant on image files under input-sensitive weights: our torch model and ONNX graph vs a reference
  network built without export's builder (open_clip's model, timm's loader of Apple's file, Apple's ViT in
  plain torch), by raw and centered cosine. The MobileCLIP-B family is checked with both conv stems.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")

from tests.export.conftest import fixture_stem
from tests.image_parity import (MIN_INPUT_FRACTION, assert_centered, assert_image_parity, describe, input_fraction,
                                load_image_files, write_image_files)
from tests.reference_fixtures import (FIXTURES, LARGE, assert_parity, fixture_images, fixture_tokens, load_fixture,
                                      parity)


def _params():
    for stem, (model_id, _) in FIXTURES.items():
        yield pytest.param(stem, id=stem, marks=[pytest.mark.slow] if model_id in LARGE else [])


def _session(path):
    """One-thread ONNX Runtime CPU session of `path` as a function of its single input."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: s.run(None, {s.get_inputs()[0].name: x})[0]


def _ort(path, x):
    return _session(path)(x)


@pytest.mark.parametrize("stem", _params())
def test_fixture_parity_torch_and_onnx(stem, fixture_files, capsys):
    from export.api import build_model

    model_id, layout = FIXTURES[stem]
    fx = load_fixture(stem)
    conv = model_id not in LARGE
    images, tokens = fixture_images(fx), fixture_tokens(fx)
    ckpt = fixture_files.checkpoint(stem)

    model = build_model(model_id, ckpt, vit_stem=fixture_stem(stem))
    with torch.no_grad():
        t_img = model.encode_image(torch.from_numpy(images)).numpy()
        t_txt = model.encode_text(torch.from_numpy(tokens)).numpy()
    del model
    assert_parity(t_img, fx["image_embeddings"], f"{stem} torch image", row_difference=conv)
    assert_parity(t_txt, fx["text_embeddings"], f"{stem} torch text")
    assert input_fraction(np.asarray(fx["text_embeddings"])) >= MIN_INPUT_FRACTION  # the captions' embeddings differ
    t_centered = assert_centered(t_txt, fx["text_embeddings"], f"{stem} torch text")

    bundle = fixture_files.bundle(stem)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source_checkpoint"]["layout"] == layout
    assert manifest["source_checkpoint"]["file"] == ckpt.name
    o_img = _ort(bundle / "image.onnx", images)
    o_txt = _ort(bundle / "text.onnx", tokens)
    assert_parity(o_img, fx["image_embeddings"], f"{stem} onnx image", row_difference=conv)
    assert_parity(o_txt, fx["text_embeddings"], f"{stem} onnx text")
    o_centered = assert_centered(o_txt, fx["text_embeddings"], f"{stem} onnx text")
    assert manifest["image_stem"] == fixture_stem(stem)
    assert manifest["towers"]["text"]["eot_pooling"] == "onehot-matmul"  # Apple and OpenCLIP text towers alike
    for tower in ("image", "text"):
        counts = manifest["towers"][tower]["node_counts"]
        assert counts["batchnorm_nodes"] == 0 and counts["torch_batchnorm_after_reparam"] == 0
    with capsys.disabled():  # the numbers the report quotes
        rows = {"torch image": parity(t_img, fx["image_embeddings"]), "torch text": parity(t_txt, fx["text_embeddings"]),
                "onnx image": parity(o_img, fx["image_embeddings"]), "onnx text": parity(o_txt, fx["text_embeddings"])}
        print(f"\n[parity] {stem}: " + "; ".join(f"{k} cos {c:.8f} relL2 {r:.2e}" for k, (c, r) in rows.items())
              + f"; text centered cos torch {t_centered:.8f} onnx {o_centered:.8f}")


def test_fp16_mobileclip2_text_graph_opens_with_the_runtime_session(fixture_files, tmp_path):
    """onnxruntime 1.32's NCHWc pass segfaulted creating a session for this fp16 graph; the runtime turns it off
    for fp16 towers. A fresh process opens and runs the graph, so a crash fails this test instead of pytest."""
    import shutil
    import subprocess
    import sys

    from export.onnx_export import convert_to_fp16

    text = tmp_path / "text.onnx"
    shutil.copy(fixture_files.bundle("MobileCLIP2-S0.open_clip") / "text.onnx", text)
    convert_to_fp16(text)
    code = ("import sys, numpy as np; from runtime.session import create_session; "
            "s, _ = create_session(sys.argv[1], 'cpu', 1, precision='fp16'); "
            "ids = np.zeros((2, 77), np.int64); ids[:, 0], ids[:, 1] = 49406, 49407; "
            "print(s.run(None, {s.get_inputs()[0].name: ids})[0].shape)")
    proc = subprocess.run([sys.executable, "-c", code, str(text)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.strip().startswith("(2, ")


# ---------------------------------------------------------------- image files, input-sensitive weights
N_IMAGES = 5  # photos and drawn pictures written as files, run one by one (batch 1, as a phone does)
# case id -> (model id, checkpoint layout, ViT stem the bundle must compute, --vit-stem given or None for the default);
# the reference network is chosen per case below
IMAGE_CASES = {
    "mobileclip-s0.ml-mobileclip": ("mobileclip-s0", "ml-mobileclip", None, None),
    "mobileclip-s1.ml-mobileclip": ("mobileclip-s1", "ml-mobileclip", None, None),
    "mobileclip-s2.ml-mobileclip": ("mobileclip-s2", "ml-mobileclip", None, None),
    "mobileclip-b.ml-mobileclip": ("mobileclip-b", "ml-mobileclip", "padded", None),
    "MobileCLIP-S1.open_clip": ("mobileclip-s1", "open_clip", None, None),
    "MobileCLIP-S2.open_clip": ("mobileclip-s2", "open_clip", None, None),
    "MobileCLIP-B.open_clip.padded": ("mobileclip-b", "open_clip", "padded", None),
    "MobileCLIP-B.open_clip.unpadded": ("mobileclip-b", "open_clip", "unpadded", "unpadded"),
    "MobileCLIP2-S0.open_clip": ("mobileclip2-s0", "open_clip", None, None),
    "MobileCLIP2-S2.open_clip": ("mobileclip2-s2", "open_clip", None, None),
    "MobileCLIP2-B.open_clip": ("mobileclip2-b", "open_clip", "unpadded", None),
}
# torch-level cases cheap enough for every CI run (the Apple-layout torch cases run in tests/apple)
TORCH_IN_CI = {"MobileCLIP-B.open_clip.padded", "MobileCLIP-B.open_clip.unpadded", "MobileCLIP2-B.open_clip",
               "MobileCLIP2-S0.open_clip"}


@pytest.fixture(scope="module")
def parity_images(tmp_path_factory):
    return write_image_files(tmp_path_factory.mktemp("parity_images"), limit=N_IMAGES)


@pytest.fixture(scope="module")
def vit_b_weights():
    """One input-sensitive ViT-B image tower in Apple's names and in OpenCLIP's (MobileCLIP-B = MobileCLIP2-B's keys).

    The OpenCLIP copy is made with export's Apple-key converter, which tests/apple checks against Apple's network.
    """
    from export.models.apple import convert_apple_state_dict
    from export.random_init import checkpoint_keys, input_sensitive_state_dict

    apple_sd = input_sensitive_state_dict("mobileclip-b", seed=0, image_only=True)
    image = {k[len("image_encoder."):]: v for k, v in convert_apple_state_dict("mobileclip-b", apple_sd).items()
             if k.startswith("image_encoder.")}
    open_clip_sd = {k: torch.zeros(shape, dtype=torch.int64 if is_int else torch.float32)
                    for k, shape, is_int in checkpoint_keys("mobileclip2-b", "open_clip")}
    assert {f"visual.trunk.{k}" for k in image} <= set(open_clip_sd)
    open_clip_sd.update({f"visual.trunk.{k}": v for k, v in image.items()})
    return {"ml-mobileclip": apple_sd, "open_clip": open_clip_sd}


def _weights(case: str, vit_b_weights: dict | None) -> dict:
    model_id, layout, stem, _ = IMAGE_CASES[case]
    if stem is not None:
        return vit_b_weights[layout]
    from export.random_init import input_sensitive_state_dict

    return input_sensitive_state_dict(model_id, seed=0, layout=layout, image_only=True)


def _batch1(encode, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([np.asarray(encode(x[i:i + 1])) for i in range(len(x))])


def _open_clip_visual(model_id: str, sd: dict) -> torch.nn.Module:
    """open_clip's own image tower of `model_id` holding the `visual.*` tensors of `sd` (strict)."""
    import open_clip

    from export.registry import get_spec

    with torch.device("meta"):
        visual = open_clip.create_model(get_spec(model_id).open_clip_name, device="meta").visual
    visual.load_state_dict({k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")},
                           strict=True, assign=True)
    return visual.eval()


def _reference(case: str, vit_b_weights: dict | None, x: np.ndarray) -> np.ndarray:
    """The reference network's embeddings: Apple's ViT for a padded stem, timm's own loader of Apple's MCi files,
    open_clip's model for OpenCLIP files."""
    model_id, layout, stem, _ = IMAGE_CASES[case]
    if stem == "padded":
        from tests.apple.apple_vit_reference import apple_vit_encode_image

        return apple_vit_encode_image(vit_b_weights["ml-mobileclip"], torch.from_numpy(x)).numpy()
    sd = _weights(case, vit_b_weights)
    if layout == "ml-mobileclip":
        import timm
        from timm.models.fastvit import checkpoint_filter_fn

        from export.models.apple import ARCHS

        net = timm.create_model(ARCHS[model_id].timm_image, num_classes=512).eval()
        net.load_state_dict(checkpoint_filter_fn(sd, net), strict=True)
        return _batch1(lambda t: net(t).numpy(), torch.from_numpy(x))
    visual = _open_clip_visual(model_id, sd)
    return _batch1(lambda t: visual(t).numpy(), torch.from_numpy(x))


def _image_params():
    for case, (_, layout, _, _) in IMAGE_CASES.items():
        for impl in ("torch", "onnx") if layout == "open_clip" else ("onnx",):  # Apple torch: tests/apple
            slow = impl == "onnx" or case not in TORCH_IN_CI
            yield pytest.param(case, impl, id=f"{case}-{impl}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("case, impl", _image_params())
def test_image_files_parity(case, impl, parity_images, tmp_path, request, capsys):
    """Our torch model / ONNX graph vs the reference network on image files: raw and centered cosine.

    The ViT-B models' default stems are part of the check: v1 B padded in both layouts, MobileCLIP2-B unpadded.
    """
    from export.api import build_model, export_bundle

    model_id, layout, stem, option = IMAGE_CASES[case]
    vit_b_weights = request.getfixturevalue("vit_b_weights") if stem else None
    size = 224 if stem else 256
    x = load_image_files(parity_images, size)
    sd = _weights(case, vit_b_weights)
    if impl == "torch":
        model = build_model(model_id, sd, vit_stem=option)
        ours = _batch1(lambda t: model.encode_image(torch.from_numpy(t)).numpy(), x)
    else:
        bundle = export_bundle(model_id, tmp_path / "bundle", checkpoint=sd, towers=("image",), vit_stem=option)
        assert json.loads((bundle / "manifest.json").read_text())["image_stem"] == stem
        ours = _batch1(_session(bundle / "image.onnx"), x)
    found = assert_image_parity(ours, _reference(case, vit_b_weights, x), f"{case} {impl} image vs reference")
    with capsys.disabled():
        print("\n" + describe(f"{case} {impl} image vs reference", found))



def test_vit_stem_choice_only_for_vit_b_models():
    """--vit-stem applies to the ViT-B CLIP models; elsewhere it is a usage error (exit 2) that names the model."""
    import subprocess
    import sys

    from edgeclip.errors import EdgeclipError
    from export.api import vit_stem_for
    from export.registry import get_spec

    assert [vit_stem_for(get_spec(m)) for m in ("b", "b-lt", "mobileclip2-b", "s0")] == \
        ["padded", "padded", "unpadded", None]
    assert vit_stem_for(get_spec("b"), "unpadded") == "unpadded"
    with pytest.raises(EdgeclipError, match="not 'zero'"):
        vit_stem_for(get_spec("b"), "zero")
    res = subprocess.run([sys.executable, "-m", "export", "--model", "s0", "--vit-stem", "padded", "--out", "x"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "mobileclip-s0 has no ViT-B CLIP image tower" in res.stderr, res.stderr
