"""What the manifest declares and the graph also knows is checked against the graph when a tower opens."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeclip import Encoder
from edgeclip.cli import main
from edgeclip.errors import BundleError

from tests.hostile.conftest import copy_bundle


def _lie(edit):
    def apply(m: dict) -> None:
        edit(m)
    return apply


LIES = {
    "embed_dim": lambda m: m.update(embed_dim=512),
    "image output shape": lambda m: m["towers"]["image"]["outputs"][0].update(shape=["batch", 512]),
    "image input size": lambda m: m["towers"]["image"]["inputs"][0].update(shape=["batch", 3, 64, 64]),
    "crop_size": lambda m: m["preprocess"].update(crop_size=64, size=64, resize=64),
    "image input dtype": lambda m: m["towers"]["image"]["inputs"][0].update(dtype="float16"),
    "text context_length": lambda m: m["tokenizer"].update(context_length=64),
    "text input shape": lambda m: m["towers"]["text"]["inputs"][0].update(shape=["batch", 64]),
    "text input name": lambda m: m["towers"]["text"]["inputs"][0].update(name="ids"),
    "text output name": lambda m: m["towers"]["text"]["outputs"][0].update(name="features"),
    "fixed batch": lambda m: m["towers"]["image"].update(batch=4),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_manifest_is_refused_at_load(tiny, tmp_path, capsys, lie):
    bad = copy_bundle(tiny, tmp_path / "lying", LIES[lie])
    with pytest.raises(BundleError) as err:
        Encoder(bad, providers="cpu", threads=1, towers=["image", "text"])  # named towers open now
    assert "graph" in str(err.value)
    lazy = Encoder(bad, providers="cpu", threads=1)  # the others when first used
    with pytest.raises(BundleError, match="graph"):
        lazy.encode_image(np.zeros((40, 50, 3), np.uint8))
        lazy.encode_text(["a photo of a dog"])
    assert main(["info", str(bad)]) == 1  # `info` used to print "embed_dim 512, sha256 ok"
    captured = capsys.readouterr()
    assert "sha256 ok" not in captured.out and captured.err.startswith("edgeclip: error:")


def test_empty_and_real_inputs_agree_on_the_embedding_size(tiny, images_dir=None):
    enc = Encoder(tiny, providers="cpu", threads=1)
    empty = enc.encode_image([])
    real = enc.encode_image(np.zeros((40, 50, 3), np.uint8))
    assert empty.shape[1] == real.shape[1] == enc.embed_dim == json.loads((tiny / "manifest.json").read_text())["embed_dim"]


def test_graphs_of_a_bundle_for_minimal_builds_are_checked_on_their_ort_alternates(tiny, tmp_path):
    """A minimal ONNX Runtime build loads only .ort files: the check then opens each tower's .ort alternate."""
    from runtime.graph_contract import check_bundle_graphs
    from runtime.ortformat import convert_bundle

    bundle = copy_bundle(tiny, tmp_path / "b")
    convert_bundle(bundle)
    for name in ("image.onnx", "text.onnx"):
        (bundle / name).write_bytes(b"not loadable here")  # what a minimal build sees in an .onnx file
    assert check_bundle_graphs(bundle) == {"image": 16, "text": 16}
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["embed_dim"] = 512
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="embed_dim is 512"):
        check_bundle_graphs(bundle)
