"""Search quality on the demo model's coloured shapes: a text query finds its shape and colour, an image query
finds its class, and the text/image mix moves between the two."""
from __future__ import annotations

import numpy as np
import pytest

from edgeclip.errors import InputError
from edgeclip.index import PhotoIndex
from tests.search.photo_trees import CLASSES, shape_image

PER_CLASS = 2


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, demo_encoder):
    """PER_CLASS JPEGs of each of the 48 classes (random background, size, position), indexed."""
    root = tmp_path_factory.mktemp("gallery")
    rng = np.random.default_rng(7)
    truth = {}
    for colour, shape in CLASSES:
        for k in range(PER_CLASS):
            path = root / f"{colour}-{shape}-{k}.jpg"
            shape_image(colour, shape, rng, side=int(rng.integers(96, 300))).save(path, quality=92)
            truth[str(path)] = (colour, shape)
    index = PhotoIndex(tmp_path_factory.mktemp("db") / "photos.db", demo_encoder)
    report = index.update([root])
    assert report.embedded == len(truth) and not report.failed
    yield index, truth, root
    index.close()


def test_a_red_circle_ranks_red_circles_first(gallery):
    index, truth, _ = gallery
    top = index.search("a red circle", top_k=PER_CLASS + 3)
    assert [truth[m.path] for m in top[:PER_CLASS]] == [("red", "circle")] * PER_CLASS
    assert all(truth[m.path] != ("red", "circle") for m in top[PER_CLASS:])
    assert [m.score for m in top] == sorted((m.score for m in top), reverse=True)


def test_text_query_top1_is_the_right_shape_and_colour_for_90_percent_of_classes(gallery):
    index, truth, _ = gallery
    hits = [truth[index.search(f"a {colour} {shape}", top_k=1)[0].path] == (colour, shape) for colour, shape in CLASSES]
    assert sum(hits) >= 0.9 * len(CLASSES), f"{sum(hits)} of {len(CLASSES)} classes"


def test_image_query_finds_its_own_class(gallery, tmp_path):
    index, truth, _ = gallery
    rng = np.random.default_rng(99)
    hits = 0
    for colour, shape in CLASSES[::6]:
        query = tmp_path / "q.png"
        shape_image(colour, shape, rng).save(query)
        hits += truth[index.search(image=query, top_k=1)[0].path] == (colour, shape)
    assert hits >= 0.75 * len(CLASSES[::6])


def test_weight_mixes_text_and_image(gallery):
    index, truth, root = gallery
    image = root / "blue-star-0.jpg"
    text_only = index.search("a yellow ring", top_k=3)
    image_only = index.search(image=image, top_k=3)
    assert index.search("a yellow ring", image=image, weight=1.0, top_k=3) == text_only
    assert index.search("a yellow ring", image=image, weight=0.0, top_k=3) == image_only
    assert image_only[0].path == str(image) and image_only[0].score == pytest.approx(1.0, abs=1e-3)
    mixed = {truth[m.path] for m in index.search("a yellow ring", image=image, weight=0.5, top_k=4)}
    assert {c for c, _ in mixed} & {"yellow", "blue"} and {s for _, s in mixed} & {"ring", "star"}


def test_bad_queries_are_input_errors(gallery):
    index, _, _ = gallery
    with pytest.raises(InputError, match="needs a text, an image"):
        index.search()
    with pytest.raises(InputError, match="between 0 and 1"):
        index.search("a red circle", image=np.zeros((8, 8, 3), np.uint8), weight=2.0)
    with pytest.raises(InputError, match="top_k"):
        index.search("a red circle", top_k=0)
    assert len(index.search("a red circle", top_k=10_000)) == len(index)
