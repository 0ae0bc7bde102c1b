"""Graphs produced for each target obey that target's constraints (types, symmetry, ops, EP coverage)."""

from __future__ import annotations

import collections

import numpy as np
import onnxruntime as ort
import pytest
from quantize_fixtures import make_image_tower, make_text_tower  # skips without onnx

import onnx
from onnx import numpy_helper

from quantize.calibration import CalibrationConfig, calibrate
from quantize.measure import embed, fidelity
from quantize.session import make_session
from quantize.recipes import candidate_nodes, get_target, prepare_model, quantize_nodes


def _quantized(tmp_path, target_name, tower="image", batch="batch", tanh=False):
    target = get_target(target_name)
    src = tmp_path / f"{tower}.onnx"
    if tower == "image":
        make_image_tower(src, batch, tanh=tanh)
    else:
        make_text_tower(src, batch)
    prepared = tmp_path / f"{tower}-prepared.onnx"
    onnx.save(prepare_model(onnx.load(str(src)), target), str(prepared))
    rng = np.random.default_rng(0)
    n = 1 if batch != "batch" else 4
    feeds = [{"image": rng.random((n, 3, 32, 32), dtype=np.float32)} if tower == "image"
             else {"input_ids": rng.integers(1, 49407, (n, 77)).astype(np.int64)} for _ in range(6)]
    ranges = calibrate(prepared, feeds, CalibrationConfig(), list(target.op_types))
    model = onnx.load(str(prepared))
    cands = candidate_nodes(model, target)
    out = quantize_nodes(prepared, tmp_path / f"{tower}-{target_name}.onnx", ranges, cands, target)
    return onnx.load(str(out)), cands, prepared, out, feeds


def _qdq_facts(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    act_types, weights = set(), []
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            act_types.add(inits[n.input[2]].dtype)
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].dtype == np.int8:
            weights.append((n, inits[n.input[1]], inits[n.input[2]]))
    weight_dq = {o for n, _, _ in weights for o in n.output} | {
        n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    quantized_ops = collections.Counter(  # nodes whose weights arrive through DequantizeLinear
        n.op_type for n in model.graph.node
        if n.op_type != "DequantizeLinear" and any(i in weight_dq for i in n.input[:2]))
    return act_types, weights, quantized_ops


def test_candidates_skip_depthwise_convs_and_activation_matmuls(tmp_path):
    model = onnx.load(str(make_image_tower(tmp_path / "i.onnx")))
    assert candidate_nodes(model, get_target("cpu")) == ["stem", "fc1", "fc2", "proj"]
    assert candidate_nodes(model, get_target("xnnpack")) == ["stem", "fc1", "fc2"]
    text = onnx.load(str(make_text_tower(tmp_path / "t.onnx")))
    assert candidate_nodes(text, get_target("cpu")) == ["mlp", "proj"]  # the token table is stored by token_table



def test_squeeze_excitation_gates_are_not_candidates():
    """Convs over a pooled [N, C, 1, 1] vector (an SE gate) stay float for every target; the conv they gate does not."""
    rng = np.random.default_rng(0)
    w = {"w": (8, 8, 3, 3), "se1": (4, 8, 1, 1), "se2": (8, 4, 1, 1)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), k) for k, s in w.items()]
    nodes = [onnx.helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             onnx.helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
             onnx.helper.make_node("Conv", ["p", "se1"], ["s1"], name="se_fc1"),
             onnx.helper.make_node("Relu", ["s1"], ["r"], name="relu"),
             onnx.helper.make_node("Conv", ["r", "se2"], ["s2"], name="se_fc2"),
             onnx.helper.make_node("Sigmoid", ["s2"], ["g"], name="gate"),
             onnx.helper.make_node("Mul", ["c", "g"], ["y"], name="scale")]
    graph = onnx.helper.make_graph(nodes, "se", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                                                    [1, 8, 16, 16])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    for name in ("cpu", "xnnpack", "nnapi"):
        assert candidate_nodes(model, get_target(name)) == ["conv"], name

def test_prepare_keeps_outputs_fuses_gelu_and_unshares_biases(tmp_path):
    src = make_image_tower(tmp_path / "i.onnx")
    prepared = prepare_model(onnx.load(str(src)), get_target("cpu"))
    ops = collections.Counter(n.op_type for n in prepared.graph.node)
    assert ops["Gelu"] == 2 and ops["Erf"] == 0 and ops["Identity"] == 0 and ops["Constant"] == 0
    biases = [n.input[2] for n in prepared.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert len(biases) == len(set(biases))
    onnx.save(prepared, str(tmp_path / "p.onnx"))
    x = [{"image": np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)}]
    a, b = embed(make_session(src), x), embed(make_session(tmp_path / "p.onnx"), x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_cpu_graph_is_u8_activations_symmetric_s8_weights_and_fuses_to_int8_kernels(tmp_path):
    model, cands, prepared, out, feeds = _quantized(tmp_path, "cpu")
    acts, weights, ops = _qdq_facts(model)
    assert acts == {np.dtype(np.uint8)}
    assert weights and all(np.all(zp == 0) for _, _, zp in weights)
    assert ops == {"Conv": 3, "MatMul": 1}, "only dense nodes carry Q/DQ; the depthwise conv stays float"
    per_channel = [s for n, s, _ in weights if s.ndim == 1 and s.size > 1]
    assert len(per_channel) == 4  # every dense weight (3 convs + the projection) is per-channel
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    fused = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert fused["QLinearConv"] == 3, f"every quantized conv must become an int8 kernel, got {dict(fused)}"
    assert fidelity(embed(make_session(prepared), feeds), embed(make_session(out), feeds))["mean_cos"] > 0.95


def test_cpu_text_graph_quantizes_the_dense_layers_not_the_token_table(tmp_path):
    model, cands, prepared, out, feeds = _quantized(tmp_path, "cpu", tower="text")
    _, _, ops = _qdq_facts(model)
    assert ops["Gather"] == 0 and ops["MatMul"] == 2
    assert fidelity(embed(make_session(prepared), feeds), embed(make_session(out), feeds))["mean_cos"] > 0.95


def test_xnnpack_graph_has_only_qdq_convs_xnnpack_takes(tmp_path):
    from runtime.readiness import optimized_with_shapes
    from runtime.xnnpack_rules import xnnpack_coverage

    model, cands, prepared, out, feeds = _quantized(tmp_path, "xnnpack", batch=1)
    acts, weights, ops = _qdq_facts(model)
    assert acts == {np.dtype(np.int8)}, "XNNPACK needs int8 (not uint8) activations"
    assert all(np.all(zp == 0) for _, _, zp in weights) and all(s.ndim == 1 for _, s, _ in weights)
    assert set(ops) == {"Conv"}
    cov = xnnpack_coverage(optimized_with_shapes(out))
    assert cov["taken_ops"].get("Conv", 0) == 4 and not cov["rejected"], cov  # 3 QDQ convs + the fp32 depthwise


def test_nnapi_graph_is_fixed_u8_symmetric_per_channel_and_one_partition(tmp_path):
    from runtime.readiness import nnapi_report

    model, cands, prepared, out, feeds = _quantized(tmp_path, "nnapi", batch=1, tanh=True)
    acts, weights, _ = _qdq_facts(model)
    assert acts == {np.dtype(np.uint8)}
    per_channel = [s for n, s, zp in weights if s.ndim == 1]
    assert len(per_channel) == 4 and all(np.all(zp == 0) for _, _, zp in weights)
    assert all(d.dim_value > 0 for i in model.graph.input for d in i.type.tensor_type.shape.dim)
    assert not any(n.op_type in ("Erf", "Gelu") for n in model.graph.node)
    rep = nnapi_report(out)
    assert rep["partitions"] == 1 and rep["nodes_covered"] >= 0.95 * rep["nodes_total"], rep


def test_unknown_target_is_a_clear_error():
    from quantize.errors import QuantizeError

    with pytest.raises(QuantizeError, match="choose one of"):
        get_target("tpu")
