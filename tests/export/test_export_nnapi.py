"""Fixed-shape S0 image graph: tanh GELU keeps NNAPI in one partition; exact GELU is reported as it is."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def nnapi_bundles(s0_checkpoint, tmp_path_factory):
    from export.api import export_bundle

    root = tmp_path_factory.mktemp("nnapi")
    return {gelu: export_bundle("s0", root / gelu, checkpoint=s0_checkpoint, batch=1, gelu=gelu, towers=("image",))
            for gelu in ("tanh", "exact")}


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_tanh_gelu_single_nnapi_partition(nnapi_bundles):
    m = _manifest(nnapi_bundles["tanh"])
    tower = m["towers"]["image"]
    assert tower["batch"] == 1 and tower["gelu"] == "tanh"
    assert tower["inputs"][0]["shape"] == [1, 3, 256, 256]
    assert tower["node_counts"]["erf_nodes"] == 0 and tower["node_counts"]["batchnorm_nodes"] == 0
    nnapi = m["device_readiness"]["image"]["nnapi"]
    assert nnapi["partitions"] == 1
    assert nnapi["nodes_covered"] >= 0.95 * nnapi["nodes_total"]
    change = tower["gelu_tanh_change"]  # how far the tanh approximation moved the torch output
    assert change["cosine"] > 0.999 and change["gelu_modules_swapped"] > 0
    assert "text" not in m["towers"] and m["tokenizer"] is None


def test_exact_gelu_reported_as_is(nnapi_bundles):
    m = _manifest(nnapi_bundles["exact"])
    tower = m["towers"]["image"]
    nnapi = m["device_readiness"]["image"]["nnapi"]
    assert tower["node_counts"]["erf_nodes"] > 0
    assert nnapi["unsupported_ops"].get("Erf", 0) > 0
    assert nnapi["partitions"] > 1 and nnapi["nodes_covered"] < nnapi["nodes_total"]
