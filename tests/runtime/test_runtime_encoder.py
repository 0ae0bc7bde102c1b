"""Encoder: every input kind, unit norm, parity with a direct ORT run, fixed batches, threads, zero-shot."""
from __future__ import annotations

import io
import json
import random
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from edgeclip import Encoder, similarity
from edgeclip.bundle import MANIFEST_NAME
from edgeclip.errors import BundleError, ImageError, InputError, TextError
from edgeclip.preprocess import preprocess_image
from edgeclip.zeroshot import DEFAULT_TEMPLATES

rng = np.random.default_rng(0)
IMAGES = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 52), (64, 33), (32, 32), (90, 70), (35, 48)]]
TEXTS = ["a photo of a cat", "", "two dogs playing in the snow", "😀 emoji & <b>html</b>", "A PHOTO OF A CAT", "x " * 500]


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def direct(bundle_dir, tower: str, x: np.ndarray) -> np.ndarray:
    """The tower run straight through onnxruntime, then L2-normalized: what Encoder must return."""
    sess = ort.InferenceSession(str(bundle_dir / f"{tower}.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_image_embeddings_equal_a_direct_onnxruntime_run(encoder, bundles):
    emb = encoder.encode_image(IMAGES)
    x = np.stack([preprocess_image(a, encoder.manifest["preprocess"]) for a in IMAGES])
    assert emb.dtype == np.float32 and emb.shape == (len(IMAGES), 16)
    np.testing.assert_allclose(emb, direct(bundles["dynamic"], "image", x), rtol=0, atol=1e-6)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    assert np.abs(emb[0] - emb[1]).max() > 1e-3  # different images, different embeddings


def test_text_embeddings_equal_a_direct_onnxruntime_run(encoder, bundles):
    emb = encoder.encode_text(TEXTS)
    ids = encoder.tokenize(TEXTS)
    assert ids.dtype == np.int64 and ids.shape == (len(TEXTS), 77)
    np.testing.assert_allclose(emb, direct(bundles["dynamic"], "text", ids), rtol=0, atol=1e-6)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


def test_every_image_input_kind_gives_the_same_embedding(encoder, tmp_path):
    arr = IMAGES[1]
    path = tmp_path / "a.png"
    path.write_bytes(png(arr))
    ref = encoder.encode_image(arr)
    assert ref.shape == (1, 16)
    kinds = [path, str(path), png(arr), bytearray(png(arr)), Image.fromarray(arr), [arr], (arr,), arr[None], iter([arr])]
    for kind in kinds:
        np.testing.assert_array_equal(encoder.encode_image(kind), ref)
    mixed = encoder.encode_image([path, png(IMAGES[0]), Image.fromarray(IMAGES[2]), IMAGES[3]])
    np.testing.assert_array_equal(mixed[0], ref[0])
    np.testing.assert_allclose(mixed[1:], encoder.encode_image([IMAGES[0], IMAGES[2], IMAGES[3]]), atol=1e-6)


def test_single_string_and_list(encoder):
    np.testing.assert_array_equal(encoder.encode_text("a photo of a cat"), encoder.encode_text(["a photo of a cat"]))


@pytest.mark.parametrize("batch_size", [1, 2, 3, 64])
def test_batch_size_does_not_change_results(encoder, batch_size):
    np.testing.assert_allclose(encoder.encode_image(IMAGES, batch_size=batch_size), encoder.encode_image(IMAGES), atol=1e-6)
    np.testing.assert_allclose(encoder.encode_text(TEXTS, batch_size=batch_size), encoder.encode_text(TEXTS), atol=1e-6)


@pytest.mark.parametrize("n", [1, 3, 4, 5])
def test_fixed_batch_graph_is_padded_and_split(fixed_encoder, encoder, n):
    fixed = fixed_encoder  # same seed: same weights as 'dynamic'
    assert fixed.manifest["towers"]["image"]["batch"] == 3
    np.testing.assert_allclose(fixed.encode_image(IMAGES[:n]), encoder.encode_image(IMAGES[:n]), atol=1e-6)
    np.testing.assert_allclose(fixed.encode_text(TEXTS[:n]), encoder.encode_text(TEXTS[:n]), atol=1e-6)


def test_empty_inputs(encoder):
    assert encoder.encode_image([]).shape == (0, 16) and encoder.encode_text([]).shape == (0, 16)
    empty = encoder.encode_text("")
    assert empty.shape == (1, 16) and np.isclose(np.linalg.norm(empty), 1.0)
    assert list(encoder.tokenize("")[0, :3]) == [49406, 49407, 0]


def test_endless_text_is_truncated_to_the_context(encoder):
    long = " ".join(["word"] * 5000)
    ids = encoder.tokenize(long)
    assert ids.shape == (1, 77) and ids[0, 0] == 49406 and ids[0, -1] == 49407 and (ids[0] != 0).all()
    np.testing.assert_array_equal(encoder.encode_text(long), encoder.encode_text(" ".join(["word"] * 200)))


@pytest.mark.parametrize("bad", [None, 3, ["ok", None], [b"bytes"], {"a": 1}])
def test_non_string_text_is_a_text_error(encoder, bad):
    with pytest.raises(TextError):
        encoder.encode_text(bad)


def test_bad_images_name_the_item(encoder, tmp_path):
    with pytest.raises(ImageError, match="item 1: .*not a recognised image"):
        encoder.encode_image([IMAGES[0], b"garbage"])
    with pytest.raises(ImageError, match="not found"):
        encoder.encode_image(tmp_path / "missing.png")
    with pytest.raises(ImageError):
        encoder.encode_image(12)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, None])
def test_bad_batch_size(encoder, batch_size):
    with pytest.raises(InputError, match="batch_size"):
        encoder.encode_image(IMAGES, batch_size=batch_size)


def test_one_tower_bundles(bundles):
    image_only = Encoder(bundles["image_only"], providers="cpu")
    assert image_only.encode_image(IMAGES[0]).shape == (1, 16) and image_only.tokenizer is None
    with pytest.raises(BundleError, match="no text tower"):
        image_only.encode_text("a cat")
    text_only = Encoder(bundles["text_only"], providers="cpu")
    assert text_only.encode_text("a cat").shape == (1, 16)
    with pytest.raises(BundleError, match="no image tower"):
        text_only.encode_image(IMAGES[0])


def test_providers_and_manifest(encoder):
    assert encoder.providers == ["CPUExecutionProvider"]
    assert encoder.manifest["model_id"] == "tiny-test"
    assert set(encoder.tower_providers) == {"image", "text"}


def test_concurrent_mixed_calls_equal_sequential(encoder):
    calls = []
    r = random.Random(0)
    for _ in range(8 * 50):
        k = r.randrange(4)
        if k == 0:
            calls.append(("image", IMAGES[r.randrange(5) : r.randrange(5) + 1 + r.randrange(3)] or IMAGES[:1]))
        elif k == 1:
            calls.append(("text", TEXTS[r.randrange(6) : r.randrange(6) + 2] or TEXTS[:1]))
        elif k == 2:
            calls.append(("classify", (IMAGES[r.randrange(5)], ("cat", "dog", "car")[: 2 + r.randrange(2)])))
        else:
            calls.append(("image", png(IMAGES[r.randrange(5)])))

    def run(call):
        kind, arg = call
        if kind == "image":
            return encoder.encode_image(arg, batch_size=2)
        if kind == "text":
            return encoder.encode_text(arg)
        return encoder.classify(arg[0], list(arg[1]), templates=["a photo of a {}.", "a {}"])

    sequential = [run(c) for c in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(run, calls))
    for a, b in zip(sequential, concurrent):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
        else:
            assert a == b


def test_similarity():
    a = np.array([[3.0, 4.0], [1.0, 0.0]], np.float32)
    s = similarity(a, a[1])
    assert s.shape == (2, 1) and np.allclose(s[:, 0], [0.6, 1.0])
    with pytest.raises(InputError, match="sizes differ"):
        similarity(a, np.ones(3))


def test_label_embeddings_average_templates_and_are_cached(encoder, monkeypatch):
    labels, templates = ["cat", "dog"], ["a photo of a {}.", "a drawing of a {}."]
    bank = encoder.label_embeddings(labels, templates)
    per_prompt = encoder.encode_text([t.format(l) for l in labels for t in templates]).reshape(2, 2, -1)
    mean = per_prompt.mean(axis=1)
    np.testing.assert_allclose(bank, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
    monkeypatch.setattr(encoder._labels, "_encode_text", lambda texts: pytest.fail("cache miss"))
    assert encoder.label_embeddings(labels, templates) is bank
    assert encoder.label_embeddings(tuple(labels), tuple(templates)) is bank


def test_classify_is_softmax_of_scaled_cosines(encoder):
    labels = ["cat", "dog", "car"]
    result = encoder.classify(IMAGES[0], labels)
    assert [l for l, _ in result] != [] and sorted(l for l, _ in result) == sorted(labels)
    probs = dict(result)
    logits = 100.0 * similarity(encoder.encode_image(IMAGES[0]), encoder.label_embeddings(labels, DEFAULT_TEMPLATES))[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([probs[l] for l in labels], expected, rtol=1e-5, atol=1e-7)
    assert [p for _, p in result] == sorted((p for _, p in result), reverse=True)
    many = encoder.classify(IMAGES[:2], labels, top_k=2)
    assert len(many) == 2 and all(len(r) == 2 for r in many)
    assert [l for l, _ in many[0]] == [l for l, _ in result[:2]]
    np.testing.assert_allclose([p for _, p in many[0]], [p for _, p in result[:2]], atol=1e-5)


@pytest.mark.parametrize("labels, templates, message", [
    ([], None, "non-empty list"), ("cat", None, "non-empty list"), (["cat", ""], None, "label 1 is empty"),
    (["cat"], ["no placeholder"], "exactly one"), (["cat"], [], "non-empty"),
])
def test_classify_rejects_bad_labels_and_templates(encoder, labels, templates, message):
    with pytest.raises(TextError, match=message):
        encoder.classify(IMAGES[0], labels, templates=templates)


def test_manifest_batch_that_disagrees_with_the_graph(bundles, tmp_path):
    root = shutil.copytree(bundles["fixed"], tmp_path / "b")
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["towers"]["image"]["batch"] = 5
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest says batch 5, the graph takes 3"):
        Encoder(root, providers="cpu", towers=["image", "text"])
    with pytest.raises(BundleError, match="manifest says batch 5, the graph takes 3"):
        Encoder(root, providers="cpu").encode_image(IMAGES)  # towers not named: checked on first use
    manifest["towers"]["image"]["batch"] = manifest["towers"]["text"]["batch"] = "dynamic"
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    enc = Encoder(root, providers="cpu")  # the graph's own fixed batch is used
    assert enc.encode_image(IMAGES).shape == (5, 16) and enc.encode_text(TEXTS).shape == (6, 16)
