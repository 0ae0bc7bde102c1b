"""e2e graphs (onnxruntime-extensions): in-graph tokenizer ids vs edgeclip's, in-graph preprocessing vs Pillow's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions", reason="e2e graphs need onnxruntime-extensions (pip install onnxruntime-extensions)")
onnx = pytest.importorskip("onnx", reason="e2e graphs are built with the `onnx` package (pip install onnx)")

from device_graphs import text_model, write_tiny_bundle  # noqa: E402
from edgeclip.bundle import load_bundle  # noqa: E402
from edgeclip.preprocess import preprocess_image  # noqa: E402
from export.e2e import tokenize_one_by_one, add_e2e, e2e_session, e2e_session_ids, image_preprocess, main, measure  # noqa: E402
from tests.toy_bundle import write_toy_bundle  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "reference" / "tokenizer_golden.json"


@pytest.fixture(scope="module")
def e2e_bundle(tmp_path_factory):
    root = write_tiny_bundle(tmp_path_factory.mktemp("e2e") / "b", batch="batch")
    add_e2e(root)
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("img")
    yy, xx = np.mgrid[0:300, 0:400]
    smooth = np.stack([xx * 255 // 399, yy * 255 // 299, (xx + yy) % 256], -1).astype(np.uint8)
    noise = (np.random.default_rng(0).random((257, 193, 3)) * 255).astype(np.uint8)
    Image.fromarray(smooth).save(folder / "smooth.png")
    Image.fromarray(noise).save(folder / "noise.png")
    Image.fromarray(smooth).save(folder / "smooth.jpg", quality=90)
    return folder


def test_manifest_lists_e2e_graphs(e2e_bundle):
    bundle = load_bundle(e2e_bundle, verify=True)
    assert bundle.towers["text"]["alternates"]["e2e"]["file"] == "text_e2e.onnx"
    assert bundle.towers["image"]["alternates"]["e2e"]["input"]["name"] == "image_bytes"


def test_text_ids_match_python_tokenizer_on_ordinary_captions(e2e_bundle):
    result = measure(e2e_bundle, captions=1000)
    assert result["captions"]["ids_equal"] >= 990, result["captions"]["examples_differing"]
    assert result["text_min_cos"] >= 0.99999  # same ids -> same tower output


def test_measure_feeds_a_batch_1_text_tower_one_text_at_a_time(tmp_path, capsys):
    """`python -m export.e2e --measure` on a fixed batch-1 tower (like --nnapi exports) used to feed 16 texts at once."""
    root = write_toy_bundle(tmp_path / "b1", text=text_model(batch=1, fixed_reshape=True), embed_dim=8)
    assert main([str(root), "--towers", "text", "--measure", "--captions", "20", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["measure"]
    assert result["captions"]["ids_equal"] == 20
    assert result["text_min_cos"] >= 0.99999


def test_golden_rows_the_graph_fixes(e2e_bundle):
    """Rows whose only difficulty is whitespace, digits, html entities or a literal eot must match OpenCLIP."""
    cases = {c["text"]: c["ids"] for c in json.loads(GOLDEN.read_text(encoding="utf-8"))["cases"]}
    fixed = ["a  photo\tof\n\na   cat  ", "2024 was a good year; 3.14159 is pi", "tab\tseparated\tvalues",
             "price: $19.99 (20% off)", "a photo of a cat", "word " * 100]
    fixed = [t for t in fixed if t in cases]
    assert len(fixed) >= 4
    ids = tokenize_one_by_one(e2e_session_ids(load_bundle(e2e_bundle)), fixed)
    for text, row in zip(fixed, ids):
        assert row.tolist() == cases[text], text
    # a literal <|endoftext|> used to crash the extensions' tokenizer; it must now just end the text
    crash = tokenize_one_by_one(e2e_session_ids(load_bundle(e2e_bundle)), ["end <|endoftext|> in the middle"])[0]
    assert crash[0] == 49406 and 49407 in crash and crash[-1] == 0


def test_padding_after_eot_is_zero_and_truncation_ends_with_eot(e2e_bundle):
    sess = e2e_session_ids(load_bundle(e2e_bundle))
    short, long = tokenize_one_by_one(sess, ["a photo of a cat", "word " * 100])
    eot = int(np.argmax(short == 49407))
    assert np.all(short[eot + 1:] == 0)
    assert long[-1] == 49407 and long[0] == 49406 and 0 not in long


def _preprocess_session(spec, tmp_path):
    model = image_preprocess(spec)
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "pre.onnx"))
    return e2e_session(tmp_path / "pre.onnx")


@pytest.mark.parametrize("spec", [
    {"size": 256, "resize": 256, "crop_size": 256, "mean": [0, 0, 0], "std": [1, 1, 1]},
    {"size": 224, "resize": 240, "crop_size": 224, "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]},
])
def test_png_preprocessing_matches_pillow(images, tmp_path, spec):
    sess = _preprocess_session(spec, tmp_path)
    for name in ("smooth.png", "noise.png"):
        graph = sess.run(None, {"image_bytes": np.fromfile(images / name, dtype=np.uint8)})[0][0]
        python = preprocess_image(images / name, spec)
        assert graph.shape == python.shape
        a, b = (graph - graph.mean()).ravel(), (python - python.mean()).ravel()
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999, name


def test_image_e2e_embedding_png_and_jpeg(e2e_bundle, images):
    result = measure(e2e_bundle, images=[images / "smooth.png", images / "noise.png", images / "smooth.jpg"], captions=16)
    assert result["image_cos"]["smooth.png"] >= 0.999 and result["image_cos"]["noise.png"] >= 0.999
    assert "smooth.jpg" in result["image_cos"]  # JPEG decoders differ; measured, documented in docs/devices.md
