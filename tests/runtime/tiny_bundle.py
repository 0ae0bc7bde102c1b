"""Build tiny edgeclip bundles with onnx.helper that follow docs/bundle.md (for tests of the device side).

Image tower: float32 [batch, 3, S, S] -> Conv(stride 4) -> Tanh -> global mean -> MatMul -> [batch, D].
Text tower: int64 [batch, 77] -> Gather(token table) + positions -> Tanh -> mean over tokens -> [batch, D].
Weights are seeded random, so embeddings depend on every input; outputs are unnormalized like real towers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeclip.bundle import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, sha256_file

VOCAB = 49408
OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.20


def _model(nodes, inputs, outputs, inits, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tiny_bundle")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def image_tower(size: int, dim: int, batch: Union[str, int], rng: np.random.Generator) -> onnx.ModelProto:
    """A small input-sensitive image graph with the bundle's image contract."""
    hidden = 8
    w = (rng.standard_normal((hidden, 3, 4, 4)) * 0.5).astype(np.float32)
    b = (rng.standard_normal(hidden) * 0.1).astype(np.float32)
    proj = rng.standard_normal((hidden, dim)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], strides=[4, 4], kernel_shape=[4, 4]),
        helper.make_node("Tanh", ["c"], ["t"]),
        helper.make_node("GlobalAveragePool", ["t"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "proj"], ["embedding"]),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(proj, "proj")]
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])
    return _model(nodes, [inp], [out], inits, "tiny_image")


def text_tower(context: int, dim: int, batch: Union[str, int], rng: np.random.Generator) -> onnx.ModelProto:
    """A small input-sensitive text graph with the bundle's text contract."""
    table = rng.standard_normal((VOCAB, dim)).astype(np.float32)
    pos = (rng.standard_normal((context, dim)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["e"], axis=0),
        helper.make_node("Add", ["e", "pos"], ["a"]),
        helper.make_node("Tanh", ["a"], ["t"]),
        helper.make_node("ReduceMean", ["t"], ["embedding"], axes=[1], keepdims=0),
    ]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(pos, "pos")]
    inp = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, context])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, dim])
    return _model(nodes, [inp], [out], inits, "tiny_text")


def _tower_entry(file: str, in_name: str, in_shape: list, in_dtype: str, dim: int, batch) -> dict:
    return {
        "file": file, "sha256": None, "precision": "fp32", "opset": OPSET, "batch": batch, "gelu": "exact",
        "inputs": [{"name": in_name, "shape": in_shape, "dtype": in_dtype}],
        "outputs": [{"name": "embedding", "shape": [in_shape[0], dim], "dtype": "float32"}],
    }


def make_tiny_bundle(
    out_dir: Union[str, Path],
    *,
    towers: Sequence[str] = ("image", "text"),
    image_size: int = 32,
    embed_dim: int = 16,
    batch: Union[str, int] = "dynamic",
    context_length: int = 77,
    interpolation: str = "bilinear",
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    tokenizer_json: Optional[Path] = None,
    seed: int = 0,
) -> Path:
    """Write a complete bundle (towers, tokenizer.json, manifest with sha256s) into out_dir and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dim_name = "batch" if batch == "dynamic" else batch
    manifest: dict = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "model_id": "tiny-test",
        "created_by": "tests/runtime/tiny_bundle.py", "source_checkpoint": None, "embed_dim": embed_dim,
        "towers": {}, "preprocess": {
            "size": image_size, "resize": image_size, "resize_mode": "shortest", "interpolation": interpolation,
            "crop": "center", "crop_size": image_size, "mean": list(mean), "std": list(std),
        },
        "tokenizer": None, "quantization": None, "device_readiness": None, "extra_files": {},
    }
    if "image" in towers:
        onnx.save(image_tower(image_size, embed_dim, dim_name, rng), str(out / "image.onnx"))
        manifest["towers"]["image"] = _tower_entry(
            "image.onnx", "image", [dim_name, 3, image_size, image_size], "float32", embed_dim, batch)
    if "text" in towers:
        onnx.save(text_tower(context_length, embed_dim, dim_name, rng), str(out / "text.onnx"))
        manifest["towers"]["text"] = _tower_entry(
            "text.onnx", "input_ids", [dim_name, context_length], "int64", embed_dim, batch)
        if tokenizer_json is None:
            from edgeclip.tokenizer import tokenizer_json_path

            tokenizer_json = tokenizer_json_path()
        shutil.copyfile(tokenizer_json, out / "tokenizer.json")
        manifest["tokenizer"] = {"file": "tokenizer.json", "sha256": sha256_file(out / "tokenizer.json"),
                                 "context_length": context_length, "sot_id": 49406, "eot_id": 49407, "pad_id": 0}
    for tower in manifest["towers"].values():
        tower["sha256"] = sha256_file(out / tower["file"])
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return out
