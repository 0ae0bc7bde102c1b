"""Small ONNX graphs built in the tests: MLP blocks with exact (Erf) or tanh GELU, fp32 or QDQ."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.toy_bundle import checked_model, write_toy_bundle  # skips without onnx
import onnx  # noqa: E402,I001
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnxruntime.quantization import CalibrationDataReader  # noqa: E402


def _gelu(prefix: str, x: str, kind: str, nodes: list, inits: list) -> str:
    """Append GELU nodes as torch exports them: exact -> Erf, tanh -> Pow/Tanh polynomial."""
    def const(name: str, value: float) -> str:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), f"{prefix}{name}"))
        return f"{prefix}{name}"

    if kind == "exact":
        nodes += [
            helper.make_node("Div", [x, const("sqrt2", 2 ** 0.5)], [f"{prefix}d"]),
            helper.make_node("Erf", [f"{prefix}d"], [f"{prefix}e"]),
            helper.make_node("Add", [f"{prefix}e", const("one", 1.0)], [f"{prefix}a"]),
        ]
    else:
        nodes += [
            helper.make_node("Pow", [x, const("three", 3.0)], [f"{prefix}p"]),
            helper.make_node("Mul", [f"{prefix}p", const("c", 0.044715)], [f"{prefix}pc"]),
            helper.make_node("Add", [x, f"{prefix}pc"], [f"{prefix}in"]),
            helper.make_node("Mul", [f"{prefix}in", const("k", (2 / np.pi) ** 0.5)], [f"{prefix}ik"]),
            helper.make_node("Tanh", [f"{prefix}ik"], [f"{prefix}t"]),
            helper.make_node("Add", [f"{prefix}t", const("one", 1.0)], [f"{prefix}a"]),
        ]
    nodes += [
        helper.make_node("Mul", [x, f"{prefix}a"], [f"{prefix}m"]),
        helper.make_node("Mul", [f"{prefix}m", const("half", 0.5)], [f"{prefix}out"]),
    ]
    return f"{prefix}out"


def mlp_model(gelu: str = "exact", blocks: int = 3, batch: int | str = 1, dim: int = 16, seed: int = 0) -> onnx.ModelProto:
    """A chain of MatMul+bias+GELU blocks on a [batch, dim] input; opset 17."""
    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    x = "x"
    for b in range(blocks):
        w = numpy_helper.from_array((rng.standard_normal((dim, dim)) / dim ** 0.5).astype(np.float32), f"w{b}")
        bias = numpy_helper.from_array(rng.standard_normal(dim).astype(np.float32) * 0.1, f"b{b}")
        inits += [w, bias]
        nodes += [
            helper.make_node("MatMul", [x, f"w{b}"], [f"mm{b}"]),
            helper.make_node("Add", [f"mm{b}", f"b{b}"], [f"lin{b}"]),
        ]
        x = _gelu(f"g{b}_", f"lin{b}", gelu, nodes, inits)
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dim])],
        inits,
    )
    return checked_model(graph)


def conv_model(batch: int | str = 1, channels: int = 8, size: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> GlobalAveragePool -> Flatten -> MatMul: an image-tower-like fp32 graph."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((channels, 3, 3, 3)) * 0.3).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32) * 0.1, "b0"),
        numpy_helper.from_array((rng.standard_normal((channels, channels, 1, 1)) * 0.3).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array((rng.standard_normal((channels, 4)) * 0.3).astype(np.float32), "proj"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"]),
        helper.make_node("GlobalAveragePool", ["c1"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("MatMul", ["flat", "proj"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        inits,
    )
    return checked_model(graph)


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write a model and return its path."""
    onnx.save(model, str(path))
    return path


def text_model(batch: int | str = 1, context: int = 77, vocab: int = 49408, dim: int = 16, seed: int = 0,
               fixed_reshape: bool = False, out_dim: int = 8) -> onnx.ModelProto:
    """A toy text tower on int64 ids: embedding Gather -> ReduceMean over tokens -> projection MatMul to out_dim.

    fixed_reshape (int batch): a Reshape to [batch, dim] before the projection, as fixed-shape exports
    (--nnapi) bake in, so feeding any other batch fails in ONNX Runtime like a real batch-1 tower.
    """
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((vocab, dim)) * 0.1).astype(np.float32), "tok_emb"),
        numpy_helper.from_array((rng.standard_normal((dim, out_dim)) * 0.3).astype(np.float32), "proj"),
    ]
    nodes = [
        helper.make_node("Gather", ["tok_emb", "input_ids"], ["emb"]),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
    ]
    pooled = "pooled"
    if fixed_reshape:
        inits.append(numpy_helper.from_array(np.array([batch, dim], np.int64), "fixed_shape"))
        nodes.append(helper.make_node("Reshape", ["pooled", "fixed_shape"], ["pooled_fixed"]))
        pooled = "pooled_fixed"
    nodes.append(helper.make_node("MatMul", [pooled, "proj"], ["embedding"]))
    graph = helper.make_graph(
        nodes, "text",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, context])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, out_dim])],
        inits,
    )
    return checked_model(graph)


def write_tiny_bundle(root: Path, batch: int | str = 1) -> Path:
    """A format-1 bundle with toy image/text towers (not CLIP-accurate; for graph-level tools).

    Image tower: conv_model, input "x" [batch, 3, 16, 16] -> "y" [batch, 4]; text tower: text_model -> [batch, 4];
    manifest gelu "tanh", embed_dim 4 (both towers agree with it, as load-time checks require).
    """
    return write_toy_bundle(root, image=conv_model(batch=batch, size=16), text=text_model(batch=batch, out_dim=4),
                            embed_dim=4, gelu="tanh")


class TinyImages(CalibrationDataReader):
    """Four seeded [1, 3, 16, 16] calibration inputs named "x"."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self._it = iter([{"x": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self._it, None)
