"""Tiny edgeclip bundles for tests of the device side: these towers, written by tests/toy_bundle.py.

Image tower: float32 [batch, 3, S, S] -> Conv(stride 4) -> Tanh -> global mean -> MatMul -> [batch, D].
Text tower: int64 [batch, 77] -> Gather(token table) + positions -> Tanh -> mean over tokens -> [batch, D].
Weights are seeded random, so embeddings depend on every input; outputs are unnormalized like real towers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from tests.toy_bundle import checked_model, preprocess_spec, write_toy_bundle  # skips without onnx
import onnx  # noqa: E402,I001
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

VOCAB = 49408


def _model(nodes, inputs, outputs, inits, name: str) -> onnx.ModelProto:
    return checked_model(helper.make_graph(nodes, name, inputs, outputs, initializer=inits), producer="tiny_bundle")


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
    rng = np.random.default_rng(seed)
    dim_name = "batch" if batch == "dynamic" else batch
    image = image_tower(image_size, embed_dim, dim_name, rng) if "image" in towers else None
    text = text_tower(context_length, embed_dim, dim_name, rng) if "text" in towers else None
    return write_toy_bundle(out_dir, image=image, text=text, embed_dim=embed_dim, tokenizer_json=tokenizer_json,
                            preprocess=preprocess_spec(image_size, interpolation, mean, std))
