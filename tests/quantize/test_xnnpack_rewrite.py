"""Linear layers over [1, T, C] rewritten to 2-D Gemm/MatMul: XNNPACK takes them, outputs stay the same."""

from __future__ import annotations

import collections

import numpy as np
import onnxruntime as ort
import pytest
from quantize_fixtures import write_tiny_bundle  # skips without onnx

import onnx
from onnx import TensorProto, helper, numpy_helper

from quantize.recipes import get_target, prepare_model
from quantize.xnnpack_graph import linear_layers_to_2d
from runtime.readiness import optimized_with_shapes
from runtime.xnnpack_rules import xnnpack_coverage

T, C, H = 8, 16, 32  # tokens, width, MLP hidden width


def _block(batch) -> onnx.ModelProto:
    """One transformer-like block: q/k/v linear layers (with bias), scores MatMul, Softmax, attn x V,
    then an MLP (linear+bias -> Relu -> linear without bias)."""
    rng = np.random.default_rng(0)
    w = lambda name, shape: numpy_helper.from_array(  # noqa: E731
        (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)
    inits = [w("wq", (C, C)), w("wk", (C, C)), w("wv", (C, C)), w("w1", (C, H)), w("w2", (H, C)),
             *(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32) * 0.1, f"b{k}")
               for k, n in (("q", C), ("k", C), ("v", C), ("1", H))),
             numpy_helper.from_array(np.array(1 / np.sqrt(C), np.float32), "scale")]
    nodes = []
    for k in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{k}"], [f"{k}0"], name=f"{k}_proj"),
                  helper.make_node("Add", [f"b{k}", f"{k}0"], [k], name=f"{k}_bias")]  # bias first, as torch exports
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
              helper.make_node("MatMul", ["q", "kt"], ["s0"], name="scores"),
              helper.make_node("Mul", ["s0", "scale"], ["s"], name="scaled"),
              helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["a"], name="attn_v"),
              helper.make_node("MatMul", ["a", "w1"], ["h0"], name="fc1"),
              helper.make_node("Add", ["h0", "b1"], ["h"], name="fc1_bias"),
              helper.make_node("Relu", ["h"], ["g"], name="act"),
              helper.make_node("MatMul", ["g", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, T, C])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, T, C])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def _run(path: str, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_linear_layers_become_2d_and_xnnpack_takes_every_dense_mac(tmp_path):
    before = _save(_block(1), tmp_path / "before.onnx")
    model, count = linear_layers_to_2d(_block(1))
    after = _save(model, tmp_path / "after.onnx")
    assert count == 5
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert ops["Gemm"] == 4 and ops["MatMul"] == 3 and ops["Add"] == 0  # fc2 has no bias: a 2-D MatMul

    linear = T * C * C * 3 + T * C * H + T * H * C  # q, k, v, fc1, fc2 at batch 1
    attention = T * T * C * 2  # scores and attn x V multiply two activations: XNNPACK has no kernel for them
    # as written (no ORT optimization): every linear layer has a 3-D A, XNNPACK takes none of them
    raw_before, raw_after = (xnnpack_coverage(optimized_with_shapes(p, optimize=False)) for p in (before, after))
    assert raw_before["macs_on_provider"] == 0 and raw_before["taken_ops"] == {"Softmax": 1}
    assert raw_after["macs_on_provider"] == linear and raw_after["taken_ops"] == {"Gemm": 4, "MatMul": 1, "Softmax": 1}
    # ORT's BASIC-level MatMulAddFusion reshapes static MatMul+Add to 2-D Gemm itself, but not a bias-free MatMul
    # (fc2); on the rewritten graph the optimizer keeps the 2-D form: every linear layer stays on XNNPACK
    cov_before, cov_after = (xnnpack_coverage(optimized_with_shapes(p)) for p in (before, after))
    assert cov_before["macs_total"] == cov_after["macs_total"] == linear + attention
    assert cov_before["macs_on_provider"] == linear - T * H * C
    assert cov_after["taken_ops"] == {"Gemm": 4, "MatMul": 1, "Softmax": 1}, cov_after
    assert cov_after["macs_on_provider"] == linear
    assert cov_after["mac_share"] == pytest.approx(linear / (linear + attention), abs=1e-4)
    # q, k, v, softmax, fc1, fc2 are each their own island: Reshape, Transpose, Relu (XNNPACK fuses it only
    # after a Conv or pool) and the attention MatMuls between them run on the CPU EP (no XNNPACK kernel)
    assert cov_after["partitions"] == 6

    x = np.random.default_rng(1).standard_normal((1, T, C)).astype(np.float32)
    ref, out = _run(before, x), _run(after, x)
    assert np.max(np.abs(out - ref)) <= 1e-5 * max(1.0, float(np.max(np.abs(ref))))



def test_shapes_computed_in_the_graph_are_resolved(tmp_path):
    """A linear layer after a Reshape whose target shape the graph computes (Shape -> Gather -> Concat, as
    exporters write head splits) still becomes 2-D: its input is static once shape values are propagated."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((rng.standard_normal((C, C)) / 4).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(0, np.int64), "i0"),
             numpy_helper.from_array(np.array([-1, C], np.int64), "tail")]
    nodes = [helper.make_node("Shape", ["x"], ["shp"], name="shape"),
             helper.make_node("Gather", ["shp", "i0"], ["b"], name="batch", axis=0),
             helper.make_node("Unsqueeze", ["b", "zero_axis"], ["b1"], name="batch_1d"),
             helper.make_node("Concat", ["b1", "tail"], ["target"], name="target", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["t"], name="tokens"),
             helper.make_node("MatMul", ["t", "w"], ["y"], name="proj")]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axis"))
    graph = helper.make_graph(nodes, "computed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, T // 2, C])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    src = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    before = _save(src, tmp_path / "before.onnx")
    model, count = linear_layers_to_2d(onnx.load(before))
    assert count == 1
    after = _save(model, tmp_path / "after.onnx")
    cov = xnnpack_coverage(optimized_with_shapes(after))
    assert cov["taken_ops"] == {"MatMul": 1} and cov["mac_share"] == 1.0
    x = np.random.default_rng(3).standard_normal((1, 2, T // 2, C)).astype(np.float32)
    np.testing.assert_allclose(_run(after, x), _run(before, x), rtol=1e-5, atol=1e-5)

def test_dynamic_shapes_are_left_alone(tmp_path):
    model, count = linear_layers_to_2d(_block("batch"))
    assert count == 0
    assert collections.Counter(n.op_type for n in model.graph.node)["MatMul"] == 7


def test_xnnpack_target_prepares_2d_linear_layers_and_quantizes_a_valid_bundle(tmp_path, tiny_shards):
    from edgeclip import Encoder, load_bundle
    from quantize.quantizer import quantize_bundle

    fp32 = write_tiny_bundle(tmp_path / "fp32", batch=1)
    text = prepare_model(onnx.load(str(fp32 / "text.onnx")), get_target("xnnpack"))
    assert not [n.name for n in text.graph.node if n.op_type == "MatMul" and n.name == "mlp"], \
        "the [1, 77, 32] x [32, 32] layer is rewritten"
    out = quantize_bundle(fp32, tmp_path / "int8", target="xnnpack", calibration=[tiny_shards / "calib"],
                          eval_paths=[tiny_shards / "eval"], samples=16, eval_samples=8, search_samples=4,
                          progress=False)
    bundle = load_bundle(out, verify=True)
    assert bundle.manifest["quantization"]["target"] == "xnnpack"
    cov = xnnpack_coverage(optimized_with_shapes(out / "text.onnx"))
    assert cov["taken_ops"].get("MatMul", 0) == 2 and cov["mac_share"] == 1.0, cov
    enc, ref = Encoder(out, providers="cpu"), Encoder(fp32, providers="cpu")
    a, b = enc.encode_text(["a red circle"]), ref.encode_text(["a red circle"])
    assert float(np.sum(a * b)) / float(np.linalg.norm(a) * np.linalg.norm(b)) > 0.999


def test_fixed_shapes_are_required_for_the_xnnpack_target(tmp_path, tiny_bundle, tiny_shards):
    from quantize.errors import QuantizeError
    from quantize.quantizer import quantize_bundle

    with pytest.raises(QuantizeError, match=r"fixed-shape graphs, but the .* tower has batch='dynamic'.*--batch 1"):
        quantize_bundle(tiny_bundle, tmp_path / "o", target="xnnpack", calibration=[tiny_shards / "calib"])
