"""Lazy loading: an Encoder whose towers were not named opens each tower (and the tokenizer) on first use only,
once however many threads ask; named towers open at construction; a bad provider is refused at construction."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgeclip.tokenizer
import runtime.session
from edgeclip import Encoder
from edgeclip.errors import InputError, ProviderError

IMAGE = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)


@pytest.fixture
def opened(monkeypatch):
    """Records the graph files sessions are created for and the tokenizer files loaded (real ORT, real files)."""
    log: list[str] = []
    real_session, real_tokenizer = runtime.session.create_session, edgeclip.tokenizer.load_tokenizer

    def session(path, *args, **kwargs):
        log.append(path.name)
        return real_session(path, *args, **kwargs)

    def tokenizer(path=None, *args, **kwargs):
        log.append("tokenizer")
        return real_tokenizer(path, *args, **kwargs)

    monkeypatch.setattr("edgeclip.encoder.create_session", session)
    monkeypatch.setattr(edgeclip.tokenizer, "load_tokenizer", tokenizer)
    return log


def test_an_encoder_used_for_images_never_loads_the_text_graph_or_the_tokenizer(bundles, opened):
    enc = Encoder(bundles["dynamic"], providers="cpu", threads=1)
    assert opened == [] and enc.towers == ["image", "text"] and enc.tower_providers == {}
    first = enc.encode_image(IMAGE)
    enc.encode_image([IMAGE, IMAGE])
    list(enc.embed_images([IMAGE] * 3, batch_size=2))
    assert opened == ["image.onnx"] and list(enc.tower_providers) == ["image"]
    assert first.shape == (1, enc.embed_dim) and opened == ["image.onnx"]


def test_first_text_loads_the_text_graph_and_the_tokenizer_once(bundles, opened):
    enc = Encoder(bundles["dynamic"], providers="cpu", threads=1)
    enc.encode_text("a photo of a cat")
    enc.encode_text(["a dog", "a cat"])
    enc.tokenize("a bird")
    assert sorted(opened) == ["text.onnx", "tokenizer"]
    enc.encode_image(IMAGE)
    assert sorted(opened) == ["image.onnx", "text.onnx", "tokenizer"]


def test_lazy_and_named_towers_give_the_same_embeddings(bundles):
    lazy = Encoder(bundles["dynamic"], providers="cpu", threads=1)
    named = Encoder(bundles["dynamic"], providers="cpu", threads=1, towers=["image", "text"])
    np.testing.assert_array_equal(lazy.encode_image(IMAGE), named.encode_image(IMAGE))
    np.testing.assert_array_equal(lazy.encode_text(["a cat"]), named.encode_text(["a cat"]))


def test_named_towers_open_at_construction(bundles, opened):
    Encoder(bundles["dynamic"], providers="cpu", threads=1, towers="image")
    assert opened == ["image.onnx"]
    opened.clear()
    enc = Encoder(bundles["dynamic"], providers="cpu", threads=1, towers=["text"])
    assert sorted(opened) == ["text.onnx", "tokenizer"]
    with pytest.raises(InputError, match="towers="):
        enc.encode_image(IMAGE)


def test_many_threads_asking_first_open_the_tower_once(bundles, opened):
    enc = Encoder(bundles["dynamic"], providers="cpu", threads=1)
    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(lambda _: enc.encode_image(IMAGE), range(16)))
        texts = list(pool.map(lambda _: enc.encode_text("a cat"), range(16)))
    assert sorted(opened) == ["image.onnx", "text.onnx", "tokenizer"]
    assert all(np.array_equal(images[0], x) for x in images) and all(np.array_equal(texts[0], x) for x in texts)


def test_a_bad_provider_or_thread_count_is_refused_before_any_tower_opens(bundles, opened):
    with pytest.raises(ProviderError, match="unknown provider"):
        Encoder(bundles["dynamic"], providers="no-such-provider")
    with pytest.raises(ProviderError, match="threads"):
        Encoder(bundles["dynamic"], threads=0)
    assert opened == []
