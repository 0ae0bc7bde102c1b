"""Builders for quantizer tests: tiny real ONNX towers, a tiny fp32 bundle, small reinforced samples."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tests.toy_bundle import write_toy_bundle  # skips without onnx
import onnx  # noqa: E402,I001
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

IMAGE_SIZE = 32
EMBED = 16
SPEC = {"size": IMAGE_SIZE, "resize": IMAGE_SIZE, "resize_mode": "shortest", "interpolation": "bilinear",
        "crop": "center", "crop_size": IMAGE_SIZE, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def _init(rng, name, shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    arr = rng.standard_normal(shape) * (scale if scale is not None else np.sqrt(2.0 / fan_in))
    return numpy_helper.from_array(arr.astype(np.float32), name)


def _gelu(x: str, out: str, tag: str) -> list:
    """torch's exact-GELU export pattern: x * (1 + erf(x / sqrt2)) * 0.5."""
    c = lambda n, v: helper.make_node("Constant", [], [f"{tag}_{n}"], name=f"{tag}_c{n}",  # noqa: E731
                                      value=numpy_helper.from_array(np.array(v, dtype=np.float32)))
    return [c("s", 1.4142135381698608), c("one", 1.0), c("half", 0.5),
            helper.make_node("Div", [x, f"{tag}_s"], [f"{tag}_d"], name=f"{tag}_div"),
            helper.make_node("Erf", [f"{tag}_d"], [f"{tag}_e"], name=f"{tag}_erf"),
            helper.make_node("Add", [f"{tag}_e", f"{tag}_one"], [f"{tag}_a"], name=f"{tag}_add"),
            helper.make_node("Mul", [x, f"{tag}_a"], [f"{tag}_m"], name=f"{tag}_mul"),
            helper.make_node("Mul", [f"{tag}_m", f"{tag}_half"], [out], name=f"{tag}_mul2")]


def make_image_tower(path: Path, batch="batch", seed: int = 0, tanh: bool = False) -> Path:
    """Stem conv -> GELU -> depthwise conv -> 1x1 conv -> GELU -> 1x1 conv -> pool -> projection."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "w0", (16, 3, 3, 3)), numpy_helper.from_array(np.zeros(16, np.float32), "b0"),
             _init(rng, "wdw", (16, 1, 3, 3)), _init(rng, "w1", (32, 16, 1, 1)),
             numpy_helper.from_array(np.zeros(32, np.float32), "b1"),  # equal zero biases: exporters dedupe these
             _init(rng, "w2", (16, 32, 1, 1)), _init(rng, "proj", (16, EMBED), 1 / 4),
             numpy_helper.from_array(np.array([-1 if batch == "batch" else batch, 16], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["image", "w0", "b0"], ["c0"], name="stem", strides=[2, 2], pads=[1, 1, 1, 1]),
             *(_tanh_gelu("c0", "g0", "act0") if tanh else _gelu("c0", "g0", "act0")),
             helper.make_node("Conv", ["g0", "wdw"], ["dw"], name="dw", group=16, pads=[1, 1, 1, 1]),
             helper.make_node("Identity", ["b0"], ["b0_alias"], name="alias"),
             helper.make_node("Conv", ["dw", "w1", "b1"], ["c1"], name="fc1"),
             *(_tanh_gelu("c1", "g1", "act1") if tanh else _gelu("c1", "g1", "act1")),
             helper.make_node("Conv", ["g1", "w2", "b0_alias"], ["c2"], name="fc2"),
             helper.make_node("Add", ["c2", "g0"], ["r"], name="residual"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "proj"], ["embedding"], name="proj")]
    graph = helper.make_graph(nodes, "image", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                             [batch, 3, IMAGE_SIZE, IMAGE_SIZE])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, EMBED])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _tanh_gelu(x: str, out: str, tag: str) -> list:
    """tanh-approximate GELU as elementary ops (what NNAPI-bound exports contain)."""
    c = lambda n, v: helper.make_node("Constant", [], [f"{tag}_{n}"], name=f"{tag}_c{n}",  # noqa: E731
                                      value=numpy_helper.from_array(np.array(v, dtype=np.float32)))
    return [c("k", 0.044715), c("r", 0.7978845608), c("one", 1.0), c("half", 0.5),
            helper.make_node("Mul", [x, x], [f"{tag}_x2"], name=f"{tag}_m0"),
            helper.make_node("Mul", [f"{tag}_x2", x], [f"{tag}_x3"], name=f"{tag}_m1"),
            helper.make_node("Mul", [f"{tag}_x3", f"{tag}_k"], [f"{tag}_kx3"], name=f"{tag}_m2"),
            helper.make_node("Add", [x, f"{tag}_kx3"], [f"{tag}_in"], name=f"{tag}_a0"),
            helper.make_node("Mul", [f"{tag}_in", f"{tag}_r"], [f"{tag}_rin"], name=f"{tag}_m3"),
            helper.make_node("Tanh", [f"{tag}_rin"], [f"{tag}_t"], name=f"{tag}_tanh"),
            helper.make_node("Add", [f"{tag}_t", f"{tag}_one"], [f"{tag}_t1"], name=f"{tag}_a1"),
            helper.make_node("Mul", [x, f"{tag}_t1"], [f"{tag}_xm"], name=f"{tag}_m4"),
            helper.make_node("Mul", [f"{tag}_xm", f"{tag}_half"], [out], name=f"{tag}_m5")]


def make_text_tower(path: Path, batch="batch", seed: int = 1) -> Path:
    """Token embedding Gather -> dense MatMul -> GELU -> mean over tokens -> projection."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "tok", (49408, 32), 1.0), _init(rng, "w", (32, 32), 1 / np.sqrt(32)),
             _init(rng, "proj", (32, EMBED), 1 / np.sqrt(32))]
    nodes = [helper.make_node("Gather", ["tok", "input_ids"], ["e"], name="token_embedding"),
             helper.make_node("MatMul", ["e", "w"], ["h"], name="mlp"),
             *_gelu("h", "g", "act"),
             helper.make_node("ReduceMean", ["g"], ["m"], name="pool", axes=[1], keepdims=0),
             helper.make_node("MatMul", ["m", "proj"], ["embedding"], name="proj")]
    graph = helper.make_graph(nodes, "text", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, 77])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, EMBED])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_tiny_bundle(out: Path, batch="dynamic", tanh: bool = False) -> Path:
    """A real fp32 bundle (manifest + both towers + tokenizer) written by the project's bundle writer."""
    work = out.parent / f".{out.name}-src"
    work.mkdir(parents=True, exist_ok=True)
    dim = "batch" if batch == "dynamic" else batch
    return write_toy_bundle(out, image=make_image_tower(work / "image.onnx", dim, tanh=tanh),
                            text=make_text_tower(work / "text.onnx", dim), embed_dim=EMBED,
                            gelu="tanh" if tanh else "exact", preprocess=SPEC)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_samples(n: int, seed: int = 0, size: tuple[int, int] = (40, 56), dim: int = 8, n_aug: int = 3):
    """n ReinforcedSamples with random pictures, valid crop boxes, RandAugment params and embeddings."""
    from quantize.shards import ReinforcedSample

    rng = np.random.default_rng(seed)
    words = ["red", "blue", "green", "circle", "square", "star", "left", "right", "small", "large"]
    out = []
    for k in range(n):
        h, w = size
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        paug = []
        for _ in range(n_aug):
            ch, cw = int(rng.integers(8, h)), int(rng.integers(8, w))
            i, j = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            ra = [[int(rng.integers(0, 14)), float(rng.uniform(-0.3, 0.3))] for _ in range(2)] if k % 2 else None
            paug.append([[i, j, ch, cw], ra])
        cap = " ".join(rng.choice(words, 4))
        syn = [" ".join(rng.choice(words, 3)) for _ in range(2)]
        out.append(ReinforcedSample(key=f"s{k:04d}", image=png_bytes(arr), image_ext="png", caption=cap,
                                    syn_captions=syn, param_aug=paug,
                                    image_emb=rng.standard_normal((n_aug, dim)).astype(np.float32),
                                    text_emb=rng.standard_normal((1 + len(syn), dim)).astype(np.float32)))
    return out
