"""Fixed-shape S0 graphs for NNAPI: the `nnapi` preset keeps each tower in one NNAPI partition; exact GELU is reported as it is."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")
from export.api import NNAPI_OPSET, ExportError, resolve_options


@pytest.fixture(scope="module")
def nnapi_bundles(s0_checkpoint, tmp_path_factory):
    from export.api import export_bundle

    root = tmp_path_factory.mktemp("nnapi")
    return {"nnapi": export_bundle("s0", root / "nnapi", checkpoint=s0_checkpoint, nnapi=True),
            "exact": export_bundle("s0", root / "exact", checkpoint=s0_checkpoint, batch=1, gelu="exact",
                                   towers=("image",))}


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_nnapi_preset_fills_batch_gelu_opset_and_refuses_what_nnapi_cannot_run():
    assert resolve_options() == resolve_options(False, "dynamic", "exact", 17)
    options = resolve_options(nnapi=True)
    assert (options.batch, options.gelu, options.opset, options.preset) == (1, "tanh", NNAPI_OPSET, "nnapi")
    assert resolve_options(nnapi=True, batch=4, opset=15).batch == 4
    for bad, word in ((dict(batch="dynamic"), "fixed batch"), (dict(gelu="exact"), "Erf"),
                      (dict(opset=17), "LayerNormalization")):
        with pytest.raises(ExportError, match=word):
            resolve_options(nnapi=True, **bad)
    for bad in (dict(batch=0), dict(batch="big"), dict(gelu="fast"), dict(opset="16")):
        with pytest.raises(ExportError):
            resolve_options(**bad)


def test_image_tower_single_nnapi_partition(nnapi_bundles):
    m = _manifest(nnapi_bundles["nnapi"])
    assert m["export_preset"] == "nnapi"
    tower = m["towers"]["image"]
    assert (tower["batch"], tower["gelu"], tower["opset"]) == (1, "tanh", NNAPI_OPSET)
    assert tower["inputs"][0]["shape"] == [1, 3, 256, 256]
    assert tower["node_counts"]["erf_nodes"] == 0 and tower["node_counts"]["batchnorm_nodes"] == 0
    nnapi = m["device_readiness"]["image"]["nnapi"]
    assert nnapi["partitions"] == 1
    assert nnapi["nodes_covered"] >= 0.95 * nnapi["nodes_total"]
    change = tower["gelu_tanh_change"]  # how far the tanh approximation moved the torch output
    assert change["cosine"] > 0.999 and change["gelu_modules_swapped"] > 0


def test_text_tower_single_nnapi_partition(nnapi_bundles):
    from runtime.readiness import nnapi_report

    m = _manifest(nnapi_bundles["nnapi"])
    tower = m["towers"]["text"]
    assert (tower["batch"], tower["gelu"], tower["opset"]) == (1, "tanh", NNAPI_OPSET)
    assert tower["inputs"][0]["shape"] == [1, 77] and tower["eot_pooling"] == "onehot-matmul"
    nnapi = nnapi_report(nnapi_bundles["nnapi"] / "text.onnx")
    assert nnapi["partitions"] == 1
    assert nnapi["nodes_covered"] >= 0.9 * nnapi["nodes_total"]
    # no LayerNormalization (opset 16 decomposes it), no Tile/GatherElements (one-hot pooling)
    assert set(nnapi["unsupported_ops"]) <= {"ArgMax"}
    assert m["device_readiness"]["text"]["nnapi"]["partitions"] == 1
    assert tower["parity"]["cosine"] >= 0.9999  # the graph still matches torch


def test_exact_gelu_reported_as_is(nnapi_bundles):
    m = _manifest(nnapi_bundles["exact"])
    assert m["export_preset"] == "default" and "text" not in m["towers"] and m["tokenizer"] is None
    tower = m["towers"]["image"]
    nnapi = m["device_readiness"]["image"]["nnapi"]
    assert tower["node_counts"]["erf_nodes"] > 0 and tower["opset"] == 17
    assert nnapi["unsupported_ops"].get("Erf", 0) > 0
    assert nnapi["partitions"] > 1 and nnapi["nodes_covered"] < nnapi["nodes_total"]
