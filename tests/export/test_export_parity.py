"""Every reference fixture: checkpoint file -> project loader -> torch and exported ONNX reproduce the reference."""
from __future__ import annotations

import json

import pytest
import torch

from tests.reference_fixtures import (FIXTURES, LARGE, assert_parity, fixture_images, fixture_tokens, load_fixture,
                                      parity)


def _params():
    for stem, (model_id, _) in FIXTURES.items():
        yield pytest.param(stem, id=stem, marks=[pytest.mark.slow] if model_id in LARGE else [])


def _ort(path, x):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("stem", _params())
def test_fixture_parity_torch_and_onnx(stem, fixture_files, capsys):
    from export.api import build_model

    model_id, layout = FIXTURES[stem]
    fx = load_fixture(stem)
    conv = model_id not in LARGE
    images, tokens = fixture_images(fx), fixture_tokens(fx)
    ckpt = fixture_files.checkpoint(stem)

    model = build_model(model_id, ckpt)
    with torch.no_grad():
        t_img = model.encode_image(torch.from_numpy(images)).numpy()
        t_txt = model.encode_text(torch.from_numpy(tokens)).numpy()
    del model
    assert_parity(t_img, fx["image_embeddings"], f"{stem} torch image", row_difference=conv)
    assert_parity(t_txt, fx["text_embeddings"], f"{stem} torch text")

    bundle = fixture_files.bundle(stem)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source_checkpoint"]["layout"] == layout
    assert manifest["source_checkpoint"]["file"] == ckpt.name
    o_img = _ort(bundle / "image.onnx", images)
    o_txt = _ort(bundle / "text.onnx", tokens)
    assert_parity(o_img, fx["image_embeddings"], f"{stem} onnx image", row_difference=conv)
    assert_parity(o_txt, fx["text_embeddings"], f"{stem} onnx text")
    assert manifest["towers"]["text"]["eot_pooling"] == "onehot-matmul"  # Apple and OpenCLIP text towers alike
    for tower in ("image", "text"):
        counts = manifest["towers"][tower]["node_counts"]
        assert counts["batchnorm_nodes"] == 0 and counts["torch_batchnorm_after_reparam"] == 0
    with capsys.disabled():  # the numbers the report quotes
        rows = {"torch image": parity(t_img, fx["image_embeddings"]), "torch text": parity(t_txt, fx["text_embeddings"]),
                "onnx image": parity(o_img, fx["image_embeddings"]), "onnx text": parity(o_txt, fx["text_embeddings"])}
        print(f"\n[parity] {stem}: " + "; ".join(f"{k} cos {c:.8f} relL2 {r:.2e}" for k, (c, r) in rows.items()))


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
