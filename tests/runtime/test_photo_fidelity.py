"""The fast image path against the exact one on real photographs (scikit-image's and matplotlib's, re-encoded
as 12, 3 and 1 MP JPEGs), with the demo model exported to a bundle; and the demo's zero-shot top-1 in both
modes. The same measurement on the S0 architecture is `python -m runtime.bench_photos --bundle S0_BUNDLE`
(docs/runtime.md gives its figures)."""
from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("torch", reason="exporting the demo bundle needs the build side (pip install -e '.[export]')")
pytest.importorskip("skimage", reason="the real photos come from scikit-image (pip install -e '.[dev]')")

from PIL import Image  # noqa: E402

from edgeclip import Encoder  # noqa: E402
from runtime.bench_photos import fast_vs_exact, write_photo_jpegs  # noqa: E402


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    from export.api import export_bundle

    return export_bundle("demo", tmp_path_factory.mktemp("fidelity") / "demo")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("photos")


@pytest.mark.parametrize("megapixels", [12, 3, 1])
def test_fast_embeddings_equal_exact_ones_on_real_photos(demo_bundle, photo_dir, megapixels):
    paths = write_photo_jpegs(photo_dir / f"{megapixels}mp", megapixels)
    assert len(paths) == 9 and Image.open(paths[0]).size[0] * Image.open(paths[0]).size[1] >= megapixels * 0.99e6
    got = fast_vs_exact(demo_bundle, paths, threads=1)
    assert got["cos_mean"] >= 0.9995 and got["cos_min"] >= 0.999, got


def test_demo_zero_shot_top1_is_the_same_in_both_modes(demo_bundle, tmp_path):
    """The demo's eval images, enlarged to 768 px JPEGs so that the fast path decodes them at reduced scale."""
    from quantize.synthetic import ensure_dataset, load_zero_shot
    from runtime.bench_accuracy import class_embeddings, top1

    zs = load_zero_shot(ensure_dataset(tmp_path / "synthetic", seed=0, sizes={"eval": 400}, splits=("eval",),
                                       progress=False))
    files = []
    for im in zs.images:
        buf = io.BytesIO()
        im.resize((768, 768), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=90)
        files.append(buf.getvalue())
    scores = {}
    for mode in ("exact", "fast"):
        enc = Encoder(demo_bundle, providers="cpu", threads=1, preprocess_mode=mode)
        classes = class_embeddings(enc.encode_text([p for ps in zs.class_prompts for p in ps]), zs.class_prompts)
        scores[mode] = 100.0 * top1(np.concatenate(list(enc.embed_images(files, batch_size=32))), classes, zs.labels)
    assert scores["exact"] >= 80.0, scores  # the demo model works on these images at all
    assert abs(scores["fast"] - scores["exact"]) <= 0.5, scores
