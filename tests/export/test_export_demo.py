"""The `demo` registry entry: the demo model, its safetensors layout, exported through the same pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")

from export.registry import MODELS


def test_demo_entry_reads_demo_constants():
    from export.models import demo_config as demo

    spec = MODELS["demo"]
    assert spec.image_size == demo.DEMO_IMAGE_SIZE and spec.embed_dim == demo.DEMO_EMBED_DIM
    assert spec.preprocess == demo.DEMO_PREPROCESS
    assert spec.layouts == ("edgeclip-demo",)


def test_demo_checkpoint_exports_and_matches_torch(tmp_path):
    from safetensors.torch import save_file

    from edgeclip import Encoder
    from export.api import build_model, export_bundle
    from export.models.demo import build_demo_model, checkpoint_metadata

    torch.manual_seed(0)
    sd = build_demo_model(checkpoint=None).state_dict()
    ckpt = tmp_path / "demo.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt), metadata=checkpoint_metadata())
    out = export_bundle("demo", tmp_path / "bundle", checkpoint=ckpt)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source_checkpoint"]["layout"] == "edgeclip-demo"
    assert manifest["towers"]["text"]["eot_pooling"] == "onehot-matmul"
    model = build_model("demo", ckpt)
    texts = ["a red square", "two blue circles"]
    enc = Encoder(out, providers="cpu", threads=1)
    with torch.no_grad():
        ref = model.encode_text(torch.from_numpy(enc.tokenize(texts))).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert (enc.encode_text(texts) * ref).sum(1).min() >= 0.9999


def test_open_clip_file_for_demo_is_refused(tmp_path):
    from safetensors.torch import save_file

    from export.api import build_model
    from export.checkpoint import CheckpointError

    ckpt = tmp_path / "x.safetensors"
    save_file({"visual.trunk.w": torch.zeros(2), "text.w": torch.zeros(2)}, str(ckpt), metadata={"layout": "open_clip"})
    with pytest.raises(CheckpointError, match="demo loads only: edgeclip-demo"):
        build_model("demo", ckpt)


def test_demo_fp16_bundle_keeps_float32_io(tmp_path):
    import onnx
    from safetensors.torch import save_file

    from export.api import export_bundle
    from export.models.demo import build_demo_model, checkpoint_metadata

    torch.manual_seed(1)
    ckpt = tmp_path / "demo.safetensors"
    save_file({k: v.contiguous() for k, v in build_demo_model(checkpoint=None).state_dict().items()}, str(ckpt),
              metadata=checkpoint_metadata())
    out = export_bundle("demo", tmp_path / "fp16", checkpoint=ckpt, precision="fp16", batch=2)
    tower = json.loads((out / "manifest.json").read_text())["towers"]["image"]
    assert tower["precision"] == "fp16" and tower["parity"]["cosine"] >= 0.999
    graph = onnx.load(str(out / "image.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    size = MODELS["demo"].image_size
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, size, size]


def test_parity_miss_is_an_error_unless_strict_is_off(tmp_path, monkeypatch):
    """A graph outside the parity limits stops the export; strict=False keeps it and the manifest says so."""
    from export import onnx_export
    from export.api import export_bundle
    from export.onnx_export import ExportError

    monkeypatch.setitem(onnx_export.PARITY_LIMITS, "fp16", {"cosine": 1.1, "rel_l2": 0.0})  # no graph can meet it
    with pytest.raises(ExportError, match="disagrees with torch"):
        export_bundle("demo", tmp_path / "strict", precision="fp16", towers=("image",))
    assert not (tmp_path / "strict").exists()
    out = export_bundle("demo", tmp_path / "lenient", precision="fp16", towers=("image",), strict=False)
    parity = json.loads((out / "manifest.json").read_text())["towers"]["image"]["parity"]
    assert parity["passed"] is False and parity["cosine"] > 0.99
