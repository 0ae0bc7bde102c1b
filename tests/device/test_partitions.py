"""Partition count, hand-overs and multiply-accumulate share on a small graph whose answers follow by hand."""

from __future__ import annotations

import numpy as np
import pytest

from device_graphs import save  # skips without onnx
from onnx import TensorProto, helper, numpy_helper
from runtime.readiness import nnapi_report, optimized_with_shapes
from runtime.xnnpack_rules import xnnpack_coverage
from tests.toy_bundle import checked_model

# x[1,3,8,8] -> conv_a 3x3 (3->4) -> Erf -> conv_b 1x1 (4->4) -> Relu -> conv_c 1x1 (4->4) -> Reshape [1,1,256]
#   -> MatMul [256,10]: the 3-D MatMul stays on the CPU EP under XNNPACK's rules, Erf is no XNNPACK op.
MACS_A = (4 * 8 * 8) * (3 * 3 * 3)  # output elements x (C_in/group * kH * kW)
MACS_B = MACS_C = (4 * 8 * 8) * 4
MACS_MATMUL = 10 * 256  # output elements x K


def _graph():
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "wa"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "wb"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "wc"),
        numpy_helper.from_array(np.array([1, 1, 256], np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32), "wm"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Erf", ["a"], ["e"], name="erf"),
        helper.make_node("Conv", ["e", "wb"], ["b"], name="conv_b"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "wc"], ["c"], name="conv_c"),
        helper.make_node("Reshape", ["c", "shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "wm"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 10])], inits)
    return checked_model(graph)


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory):
    return save(_graph(), tmp_path_factory.mktemp("split") / "split.onnx")


def test_xnnpack_partitions_handovers_and_mac_share(graph_path):
    cov = xnnpack_coverage(optimized_with_shapes(graph_path))
    assert cov["taken_ops"] == {"Conv": 3, "Relu": 1}
    # {conv_a} and {conv_b, relu, conv_c}: Erf separates them, the 3-D MatMul is not taken
    assert cov["partitions"] == 2 and cov["partition_sizes"] == [3, 1]
    # x in, a out to Erf, e back in, c out to Reshape: all 4-D, all leave or enter an NHWC partition
    assert cov["handovers"] == 4 and cov["layout_changes"] == 4
    total = MACS_A + MACS_B + MACS_C + MACS_MATMUL
    assert cov["macs_total"] == total
    assert cov["macs_on_provider"] == MACS_A + MACS_B + MACS_C
    assert cov["mac_share"] == pytest.approx((MACS_A + MACS_B + MACS_C) / total, abs=1e-4)


def test_nnapi_share_counts_the_same_macs_and_excludes_erf(graph_path):
    report = nnapi_report(graph_path)
    assert report["macs_total"] == MACS_A + MACS_B + MACS_C + MACS_MATMUL
    assert "Erf" in report["unsupported_ops"] and report["partitions"] >= 2
    assert 0 < report["macs_on_provider"] <= report["macs_total"]
    assert report["handovers"] >= 2  # at least a -> Erf -> e
