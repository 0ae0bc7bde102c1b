"""XNNPACK node rules on graphs quantized here with ORT's real quantizer, and the bundle readiness report."""

from __future__ import annotations

import numpy as np
import pytest

from device_graphs import TinyImages as _Images, conv_model, mlp_model, save, write_tiny_bundle  # skips without onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from edgeclip.errors import BundleError
from runtime.readiness import format_readiness, main, optimized_with_shapes, readiness_report
from runtime.xnnpack_rules import xnnpack_coverage


def _quantized(tmp_path, activations: QuantType, weights: QuantType):
    src = save(conv_model(), tmp_path / "conv.onnx")
    out = tmp_path / f"conv_{activations.name}_{weights.name}.onnx"
    quantize_static(str(src), str(out), _Images(), quant_format=QuantFormat.QDQ,
                    activation_type=activations, weight_type=weights, per_channel=True)
    return xnnpack_coverage(optimized_with_shapes(out))


def test_s8s8_qdq_convs_are_taken_with_their_q_dq_nodes(tmp_path):
    cov = _quantized(tmp_path, QuantType.QInt8, QuantType.QInt8)
    assert cov["taken_ops"]["Conv"] == 2
    assert cov["taken_ops"]["DequantizeLinear"] >= 4 and cov["taken_ops"]["QuantizeLinear"] >= 2
    # a QDQ MatMul is no XNNPACK node unit
    assert "MatMul" in cov["cpu_ops"]


def test_u8_activations_with_s8_weights_are_rejected(tmp_path):
    cov = _quantized(tmp_path, QuantType.QUInt8, QuantType.QInt8)
    assert cov["nodes_taken"] == 0
    assert any("QDQ conv types x=u8" in reason for reason in cov["rejected"])


def test_fp32_conv_relu_fusion_and_static_matmul(tmp_path):
    cov = xnnpack_coverage(optimized_with_shapes(save(conv_model(), tmp_path / "c.onnx")))
    assert cov["taken_ops"] == {"Conv": 2, "MatMul": 1, "Relu": 1}


def test_dynamic_batch_matmul_stays_on_cpu(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    dyn = xnnpack_coverage(optimized_with_shapes(save(model, tmp_path / "dyn.onnx")))
    assert dyn["nodes_taken"] == 0 and any("dynamic" in r for r in dyn["rejected"])


def test_readiness_report_of_a_bundle(tmp_path):
    report = readiness_report(write_tiny_bundle(tmp_path / "b", batch=1))
    image = report["towers"]["image"]
    assert image["nnapi"]["partitions"] == 1
    assert image["nnapi"]["nodes_covered"] == image["nnapi"]["nodes_total"]
    assert image["xnnpack"]["nodes_taken"] > 0
    text = format_readiness(report)
    assert "[image]" in text and "[text]" in text and "NNAPI" in text and "XNNPACK" in text


def test_dynamic_bundle_gets_batch_advice(tmp_path):
    report = readiness_report(write_tiny_bundle(tmp_path / "b", batch="batch"))
    assert any("--batch 1" in tip for tip in report["towers"]["image"]["advice"])


def test_erf_graph_gets_gelu_advice(tmp_path):
    from runtime.readiness import _advice, nnapi_report, xnnpack_report

    graph = save(mlp_model("exact"), tmp_path / "erf.onnx")
    tips = _advice({"precision": "fp32"}, nnapi_report(graph), xnnpack_report(graph), None)
    assert any("--gelu tanh" in tip for tip in tips)


def test_bad_bundle_is_a_bundle_error_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(BundleError):
        readiness_report(tmp_path / "nope")
    assert main([str(tmp_path / "nope")]) == 1
    assert "error:" in capsys.readouterr().err
