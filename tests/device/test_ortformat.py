"""ORT-format conversion of a bundle: .ort equals .onnx (fp32 <= 1e-5, INT8 identical), config and manifest written."""

from __future__ import annotations

import io
import json

import numpy as np
import onnxruntime as ort
import pytest

from device_graphs import TinyImages as _Images, write_tiny_bundle  # skips without onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from edgeclip.bundle import load_bundle, sha256_file
from runtime.ortformat import OrtFormatError, convert_bundle, main


def _quantize_image_tower(root, activations: QuantType) -> None:
    """Replace the bundle's image tower by a QDQ INT8 one made with ORT's quantizer; fix the manifest hash."""
    path = root / "image.onnx"
    quantize_static(str(path), str(path), _Images(), quant_format=QuantFormat.QDQ,
                    activation_type=activations, weight_type=QuantType.QInt8, per_channel=True)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["towers"]["image"].update(sha256=sha256_file(path), precision="int8")
    (root / "manifest.json").write_text(json.dumps(manifest))


def _run(path, feed):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feed)[0]


FEEDS = {
    "image": {"x": np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)},
    "text": {"input_ids": np.random.default_rng(2).integers(0, 49408, (1, 77), dtype=np.int64)},
}


@pytest.mark.parametrize("style", ["fixed", "runtime"])
@pytest.mark.parametrize("precision", ["fp32", "int8-s8", "int8-u8"])
def test_ort_outputs_equal_onnx(tmp_path, style, precision):
    root = write_tiny_bundle(tmp_path / "b", batch=1)
    if precision != "fp32":
        _quantize_image_tower(root, QuantType.QInt8 if precision == "int8-s8" else QuantType.QUInt8)
    summary = convert_bundle(root, style, "arm", log=io.StringIO())
    for tower, feed in FEEDS.items():
        onnx_out, ort_out = _run(root / f"{tower}.onnx", feed), _run(root / summary["towers"][tower]["file"], feed)
        if precision != "fp32" and tower == "image":
            np.testing.assert_array_equal(ort_out, onnx_out)
        else:
            assert np.abs(ort_out - onnx_out).max() <= 1e-5


def test_manifest_and_config(tmp_path):
    root = write_tiny_bundle(tmp_path / "b", batch=1)
    convert_bundle(root, None, "arm", log=io.StringIO())
    bundle = load_bundle(root, verify=True)  # every new file is hashed in the manifest
    ort_entry = bundle.towers["image"]["alternates"]["ort"]
    assert ort_entry["file"] == "image.ort" and ort_entry["optimization_style"] == "Fixed"
    config = (root / "required_operators.config").read_text().splitlines()
    ops = {line.split(";")[2] for line in config if not line.startswith("#")}
    assert {"Conv", "Gather", "MatMul"} <= {op for entry in ops for op in entry.split(",")}
    assert not any(p.name.startswith(".") for p in root.iterdir()), "temp files left in the bundle"


def test_nnapi_bundles_default_to_runtime_style(tmp_path):
    root = write_tiny_bundle(tmp_path / "b", batch=1)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["quantization"] = {"target": "nnapi"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    summary = convert_bundle(root, log=io.StringIO())
    assert summary["style"] == "Runtime"
    assert (root / "required_operators.with_runtime_opt.config").is_file()


def test_cli_json_and_errors(tmp_path, capsys):
    root = write_tiny_bundle(tmp_path / "b", batch=1)
    assert main([str(root), "--json", "--style", "fixed", "--target-platform", "amd64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["target_platform"] == "amd64"
    assert main([str(tmp_path / "missing")]) == 1
    with pytest.raises(OrtFormatError):
        convert_bundle(root, "bogus", log=io.StringIO())


def test_runtime_session_loads_ort_graphs(tmp_path):
    """runtime.session.create_session (what Encoder uses) runs a .ort tower and gives the .onnx output."""
    from runtime.session import create_session

    root = write_tiny_bundle(tmp_path / "b", batch=1)
    convert_bundle(root, "fixed", "arm", log=io.StringIO())
    session, providers = create_session(root / "image.ort", "cpu", threads=1, fixed_shape=True)
    assert providers[0] == "CPUExecutionProvider"
    out = session.run(None, FEEDS["image"])[0]
    np.testing.assert_allclose(out, _run(root / "image.onnx", FEEDS["image"]), atol=1e-5)


def test_encoder_prefers_ort_alternates(tmp_path):
    """Encoder(prefer_ort=True) runs the .ort graphs a conversion listed, with the .onnx outputs."""
    from edgeclip import Encoder

    root = write_tiny_bundle(tmp_path / "b")
    convert_bundle(root, style="fixed", target_platform="amd64")
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    texts = ["a photo of a cat", "a diagram"]
    onnx_enc, ort_enc = Encoder(root, providers="cpu"), Encoder(root, providers="cpu", prefer_ort=True)
    for tower in ort_enc._towers.values():
        assert tower.session._model_path.endswith(".ort")
    np.testing.assert_allclose(ort_enc.encode_image(image), onnx_enc.encode_image(image), atol=1e-5)
    np.testing.assert_allclose(ort_enc.encode_text(texts), onnx_enc.encode_text(texts), atol=1e-5)
