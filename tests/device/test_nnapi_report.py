"""nnapi_report on graphs built here: Erf splits NNAPI partitions, tanh-GELU does not, dynamic batch blocks all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from device_graphs import conv_model, mlp_model, save
from runtime.readiness import ReadinessError, nnapi_report


def test_exact_gelu_splits_partitions_at_each_erf(tmp_path):
    report = nnapi_report(save(mlp_model("exact", blocks=3), tmp_path / "erf.onnx"))
    assert report["unsupported_ops"] == {"Erf": 3}
    # each Erf cuts the chain: 3 blocks -> 4 partitions, everything but the Erf nodes covered
    assert report["partitions"] == 4
    assert report["nodes_covered"] == report["nodes_total"] - 3
    assert sum(report["partition_sizes"]) == report["nodes_covered"]


def test_tanh_gelu_is_one_partition_covering_everything(tmp_path):
    report = nnapi_report(save(mlp_model("tanh", blocks=3), tmp_path / "tanh.onnx"))
    assert report["unsupported_ops"] == {}
    assert report["partitions"] == 1
    assert report["nodes_covered"] == report["nodes_total"]


def test_dynamic_batch_leaves_nothing_for_nnapi(tmp_path):
    report = nnapi_report(save(mlp_model("tanh", batch="batch"), tmp_path / "dyn.onnx"))
    assert report["partitions"] == 0
    assert report["nodes_covered"] == 0
    assert report["dynamic_shape_nodes"] == report["nodes_total"]


def test_conv_graph_fully_covered(tmp_path):
    report = nnapi_report(save(conv_model(), tmp_path / "conv.onnx"))
    assert (report["partitions"], report["nodes_covered"]) == (1, report["nodes_total"])
    assert any(c.startswith("ai.onnx:Conv:") for c in report["caveats"])


def test_missing_or_broken_graph_is_a_clear_error(tmp_path):
    with pytest.raises(ReadinessError, match="not found"):
        nnapi_report(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ReadinessError, match="bad.onnx"):
        nnapi_report(bad)


def test_readiness_does_not_import_torch():
    code = "import sys, runtime.readiness, runtime.ortformat; runtime.readiness.import_ort_tool('mobile_helpers.usability_checker'); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
