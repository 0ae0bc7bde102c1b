"""Streaming API: Encoder.embed_images / embed_texts keep input order, read their input a bounded distance
ahead, equal encode_image / encode_text, and report bad items as the caller chooses."""
from __future__ import annotations

import itertools
import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from edgeclip.errors import ImageError, InputError, TextError


def picture(seed: int, w: int = 40, h: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class Counting:
    """An endless (or `n`-long) source of images that records how far it has been read."""

    def __init__(self, n=None):
        self.n, self.pulled = n, 0

    def __iter__(self):
        for i in (range(self.n) if self.n is not None else itertools.count()):
            self.pulled = i + 1
            yield picture(i % 7)


def test_batches_come_in_input_order_and_equal_encode_image(encoder, tmp_path):
    items = []
    for i in range(11):
        arr = picture(i)
        kind = i % 4
        if kind == 0:
            path = tmp_path / f"{i}.png"
            Image.fromarray(arr).save(path)
            items.append(path)
        elif kind == 1:
            items.append(Image.fromarray(arr))
        elif kind == 2:
            path = tmp_path / f"{i}.png"
            Image.fromarray(arr).save(path)
            items.append(path.read_bytes())
        else:
            items.append(arr)
    batches = list(encoder.embed_images(iter(items), batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 3]
    streamed = np.concatenate(batches)
    one_by_one = np.concatenate([encoder.encode_image(it) for it in items])
    np.testing.assert_allclose(streamed, one_by_one, atol=1e-6)
    np.testing.assert_allclose(encoder.encode_image(items, batch_size=3), one_by_one, atol=1e-6)
    for workers in (0, 1, 3):
        again = np.concatenate(list(encoder.embed_images(items, batch_size=5, workers=workers)))
        np.testing.assert_allclose(again, one_by_one, atol=1e-6)


def test_an_endless_generator_is_read_a_bounded_distance_ahead(encoder):
    source = Counting()
    stream = encoder.embed_images(iter(source), batch_size=4, workers=2)
    seen = 0
    for batch in itertools.islice(stream, 5):
        seen += len(batch)
        assert source.pulled <= seen + 2 * 4 + 2, (source.pulled, seen)  # look-ahead: 2 batches + workers
    stream.close()
    assert seen == 20


def test_memory_does_not_grow_with_the_input_length(encoder):
    """Peak traced memory over 10x more items stays where it was (no list of inputs or outputs is kept)."""
    def peak(n: int) -> int:
        tracemalloc.start()
        for batch in encoder.embed_images(Counting(n), batch_size=4, workers=2):
            assert batch.shape[0] <= 4
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(24), peak(240)
    assert large <= 1.5 * small + 256 * 1024, (small, large)


def test_worker_threads_end_when_the_stream_is_closed(encoder):
    before = {t.name for t in threading.enumerate()}
    stream = encoder.embed_images(Counting(), batch_size=2, workers=3)
    next(stream)
    assert any(t.name.startswith("edgeclip-decode") for t in threading.enumerate())
    stream.close()
    assert {t.name for t in threading.enumerate() if t.name.startswith("edgeclip-decode")} <= before


def test_a_bad_item_raises_with_its_position_in_the_whole_input(encoder):
    items = [picture(i) for i in range(10)]
    items[7] = b"not an image"
    with pytest.raises(ImageError, match=r"^item 7: .*not a recognised image"):
        for _ in encoder.embed_images(items, batch_size=3):
            pass
    with pytest.raises(ImageError, match=r"^item 7: "):
        encoder.encode_image(items, batch_size=3)


def test_skip_and_callback_leave_bad_items_out_and_say_where(encoder, tmp_path):
    items = [picture(i) for i in range(9)]
    items[2] = b"junk"
    items[6] = tmp_path  # a directory
    good = [i for i in range(9) if i not in (2, 6)]
    reported = []
    batches = list(encoder.embed_images(items, batch_size=4, with_index=True,
                                        on_error=lambda i, item, err: reported.append((i, err))))
    assert [i for i, _ in reported] == [2, 6]
    assert all(isinstance(e, ImageError) for _, e in reported) and "is a directory" in str(reported[1][1])
    indices = np.concatenate([idx for idx, _ in batches])
    rows = np.concatenate([emb for _, emb in batches])
    assert indices.tolist() == good
    np.testing.assert_allclose(rows, encoder.encode_image([items[i] for i in good]), atol=1e-6)
    skipped = np.concatenate(list(encoder.embed_images(items, batch_size=4, on_error="skip")))
    np.testing.assert_allclose(skipped, rows, atol=1e-6)


def test_texts_stream_in_order_and_equal_encode_text(encoder):
    texts = (f"a photo of thing number {i}" for i in range(150))
    batches = list(encoder.embed_texts(texts, batch_size=64))
    assert [len(b) for b in batches] == [64, 64, 22]
    ref = encoder.encode_text([f"a photo of thing number {i}" for i in range(150)])
    np.testing.assert_allclose(np.concatenate(batches), ref, atol=1e-6)
    with pytest.raises(TextError, match="item 1: "):
        list(encoder.embed_texts(["ok", 3, "fine"]))
    idx, emb = next(iter(encoder.embed_texts(["ok", 3, "fine"], on_error="skip", with_index=True)))
    assert idx.tolist() == [0, 2] and emb.shape[0] == 2


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": True}, {"on_error": "ignore"},
                                    {"workers": -1}, {"workers": 10_000}])
def test_bad_stream_arguments_are_refused_before_reading(encoder, kwargs):
    source = Counting()
    with pytest.raises(InputError):
        encoder.embed_images(iter(source), **kwargs)
    assert source.pulled == 0


def test_a_two_d_array_is_named_as_such(encoder):
    with pytest.raises(ImageError, match=r"shape \(8, 8\)"):
        encoder.encode_image(np.zeros((8, 8), np.uint8))


def test_image_only_encoder_never_loads_the_tokenizer(bundles):
    from edgeclip import Encoder

    enc = Encoder(bundles["dynamic"], providers="cpu", threads=1, towers="image")
    assert enc.tokenizer is None and list(enc.tower_providers) == ["image"]
    assert enc.encode_image(picture(0)).shape[0] == 1
    with pytest.raises(InputError, match="towers="):
        enc.encode_text("a dog")
    text = Encoder(bundles["dynamic"], providers="cpu", threads=1, towers=["text"])
    assert list(text.tower_providers) == ["text"] and text.encode_text("a dog").shape[0] == 1
