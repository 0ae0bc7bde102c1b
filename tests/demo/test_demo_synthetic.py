"""The synthetic reinforced dataset: deterministic by seed, held-out combinations, readable by quantize."""

import json

import numpy as np
import pytest

from quantize.augment import parse_entry
from quantize.synthetic import (HELD_OUT, IMAGE_SIZE, N_AUG, N_SYN, STORED_RANDAUG, TEACHER_DIM, DatasetError,
                                ensure_dataset, evaluate_zero_shot, load_zero_shot, make_sample)


def test_generation_is_deterministic_by_seed():
    a, scene_a = make_sample(0, "train", 7)
    b, scene_b = make_sample(0, "train", 7)
    c, _ = make_sample(1, "train", 7)
    assert scene_a == scene_b and a.image == b.image and a.param_aug == b.param_aug
    assert a.caption == b.caption and a.syn_captions == b.syn_captions
    np.testing.assert_array_equal(a.image_emb, b.image_emb)
    np.testing.assert_array_equal(a.text_emb, b.text_emb)
    assert a.image != c.image


def test_sample_structure_matches_the_reinforced_format():
    s, scene = make_sample(0, "train", 3)
    assert s.image_emb.shape == (N_AUG, TEACHER_DIM) and s.text_emb.shape == (1 + N_SYN, TEACHER_DIM)
    assert len(s.syn_captions) == N_SYN and 1 <= len(scene.objects) <= 3
    np.testing.assert_allclose(np.linalg.norm(s.image_emb, axis=1), 1.0, rtol=1e-5)
    for entry in s.param_aug:
        (i, j, h, w), ops = parse_entry(entry)  # the quantize reader accepts every stored entry
        assert 0 <= i and 0 <= j and i + h <= IMAGE_SIZE and j + w <= IMAGE_SIZE
        assert ops is None or all(op in STORED_RANDAUG for op, _ in ops)
    for obj in scene.objects:  # every object is named in the original caption
        assert f"{obj.colour} {obj.shape}" in s.caption


def test_eval_combinations_never_appear_in_training():
    train = {(o.colour, o.shape) for i in range(400) for o in make_sample(0, "train", i)[1].objects}
    calib = {(o.colour, o.shape) for i in range(100) for o in make_sample(0, "calib", i)[1].objects}
    evals = {(o.colour, o.shape) for i in range(100) for o in make_sample(0, "eval", i)[1].objects}
    assert evals == set(HELD_OUT)
    assert not (train | calib) & evals
    assert len(train) == 48 - len(HELD_OUT)  # all other combinations are seen


def test_dataset_layout_and_cache(small_dataset, tmp_path):
    meta = json.loads((small_dataset / "dataset.json").read_text())
    assert meta["seed"] == 0 and sorted(meta["held_out"]) == sorted(f"{c} {s}" for c, s in HELD_OUT)
    assert sorted(p.name for p in small_dataset.iterdir()) == ["calib", "dataset.json", "eval", "train"]
    paug = json.loads(__import__("tarfile").open(next((small_dataset / "calib").glob("*.tar"))).extractfile(
        "calib000000.paug.json").read())["param_aug"]
    assert isinstance(paug, str)  # calib uses the HF copy's string encoding
    assert ensure_dataset(small_dataset, seed=0) == small_dataset  # cached: accepted as is
    with pytest.raises(DatasetError, match="different synthetic dataset"):
        ensure_dataset(small_dataset, seed=1)
    with pytest.raises(DatasetError, match="ensure_dataset"):
        load_zero_shot(tmp_path)


def test_evaluate_zero_shot_scores_an_oracle_and_a_liar(small_dataset):
    zs = load_zero_shot(small_dataset)
    assert len(zs.images) == len(zs.labels) == 400 and len(zs.class_names) == 48
    label_of = {id(im): int(y) for im, y in zip(zs.images, zs.labels)}
    prompt_class = {p: k for k, prompts in enumerate(zs.class_prompts) for p in prompts}
    eye = np.eye(len(zs.class_names))

    def text(texts):
        return eye[[prompt_class[t] for t in texts]]

    assert evaluate_zero_shot(lambda ims: 3.0 * eye[[label_of[id(i)] for i in ims]], text, zs) == 1.0
    wrong = evaluate_zero_shot(lambda ims: eye[[(label_of[id(i)] + 1) % 48 for i in ims]], text, zs)
    assert wrong == 0.0


def test_splits_are_generated_on_demand(tmp_path):
    root = ensure_dataset(tmp_path / "d", sizes={"train": 3, "calib": 3, "eval": 3}, progress=False, splits=("eval",))
    assert sorted(p.name for p in root.iterdir()) == ["dataset.json", "eval"]  # no temp leftovers either
    ensure_dataset(root, progress=False, splits=("train",))
    assert (root / "train").is_dir() and not (root / "calib").exists()
    with pytest.raises(DatasetError, match="unknown split"):
        ensure_dataset(root, progress=False, splits=("test",))
