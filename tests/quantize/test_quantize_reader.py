"""The reinforced-shard reader: both paug encodings, teacher embeddings, exact crops, malformed samples."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from quantize.augment import AugmentError, apply_crop, augmented_view, parse_entry, sample_views
from edgeclip.shards import ReadStats, ShardError, iter_samples, resolve_sources
from quantize.shards import write_shards

from quantize_fixtures import SPEC, make_samples, png_bytes


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _good_members(key, seed=0, paug=None, npz=True):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    z = io.BytesIO()
    np.savez(z, image_emb=np.ones((1, 4), np.float32), text_emb=np.ones((2, 4), np.float32))
    members = [(f"{key}.png", png_bytes(arr)), (f"{key}.txt", b"a caption"),
               (f"{key}.syn.json", json.dumps({"syn_text": ["syn"]}).encode()),
               (f"{key}.paug.json", json.dumps({"param_aug": paug or [[[0, 0, 10, 10], None]]}).encode())]
    return members + ([(f"{key}.npz", z.getvalue())] if npz else [])


@pytest.mark.parametrize("as_string", [False, True])
def test_both_paug_encodings_and_npz_embeddings_round_trip(tmp_path, as_string):
    samples = make_samples(5, seed=3)
    write_shards(samples, tmp_path, samples_per_shard=2, paug_as_json_string=as_string)
    stats = ReadStats()
    got = list(iter_samples(tmp_path, stats))
    assert [s.key for s in got] == [s.key for s in samples] and stats.skipped == 0 and stats.read == 5
    for want, have in zip(samples, got):
        assert have.param_aug == json.loads(json.dumps(want.param_aug))
        assert have.caption == want.caption and have.syn_captions == want.syn_captions
        np.testing.assert_array_equal(have.image_emb, want.image_emb)
        np.testing.assert_array_equal(have.text_emb, want.text_emb)
        assert np.array_equal(np.asarray(have.image), np.asarray(Image.open(io.BytesIO(want.image)).convert("RGB")))
        assert have.captions == [want.caption, *want.syn_captions]


def test_reapplied_crops_equal_crops_cut_independently(tmp_path):
    samples = make_samples(4, seed=5)
    write_shards(samples, tmp_path)
    for want, have in zip(samples, iter_samples(tmp_path)):
        original = np.asarray(Image.open(io.BytesIO(want.image)).convert("RGB"))
        for entry in have.param_aug:
            i, j, h, w = entry[0]
            cut = original[i:i + h, j:j + w]
            # at the crop's own (square) size no resampling happens: pixels must match exactly
            square = min(h, w)
            same = apply_crop(have.image, (i, j, square, square), square)
            np.testing.assert_array_equal(np.asarray(same), original[i:i + square, j:j + square])
            # the model view: the cut resized to the model's square input, then runtime preprocessing
            view = augmented_view(have.image, entry, SPEC)
            expect = np.asarray(Image.fromarray(cut).resize((SPEC["size"],) * 2, Image.Resampling.BICUBIC),
                                dtype=np.float32).transpose(2, 0, 1) / 255.0
            np.testing.assert_allclose(view, expect, atol=1e-6)


def test_views_follow_stored_entries_and_plain_images_get_runtime_preprocessing(tmp_path):
    from edgeclip.preprocess import preprocess_image

    samples = make_samples(2, seed=6)
    write_shards(samples, tmp_path)
    s = next(iter_samples(tmp_path))
    views = sample_views(s, SPEC, views=2)
    assert len(views) == 2 and not np.array_equal(views[0], views[1])
    s.param_aug = []
    np.testing.assert_array_equal(sample_views(s, SPEC)[0], preprocess_image(s.image, SPEC))


def test_malformed_samples_are_skipped_and_counted(tmp_path):
    bad_json = [("b1.png", _good_members("x")[0][1]), ("b1.paug.json", b"{not json")]
    no_paug = [m for m in _good_members("b2") if not m[0].endswith("paug.json")]
    bad_image = [("b3.jpg", b"not an image"), *[m for m in _good_members("b3") if not m[0].endswith(".png")]]
    no_image = [m for m in _good_members("b4") if not m[0].endswith(".png")]
    bad_paug_string = [m if not m[0].endswith("paug.json") else ("b5.paug.json", b'{"param_aug": "[[1, 2"}')
                       for m in _good_members("b5")]
    _tar(tmp_path / "a.tar", _good_members("g1") + bad_json + no_paug + bad_image + no_image + bad_paug_string
         + _good_members("g2", seed=1))
    (tmp_path / "b.tar").write_bytes(b"this is not a tar file at all" * 20)
    stats = ReadStats()
    with pytest.warns(UserWarning, match="cannot open as a tar"):
        keys = [s.key for s in iter_samples(sorted(tmp_path.glob("*.tar")), stats)]
    assert keys == ["g1", "g2"]
    assert stats.skipped == 6 and stats.read == 2
    assert stats.reasons["bad JSON in paug.json"] == 1 and stats.reasons["missing paug.json"] == 1
    assert stats.reasons["undecodable image"] == 1 and stats.reasons["missing image"] == 1
    assert stats.reasons["bad JSON in paug.json param_aug string"] == 1


def test_bad_augmentation_entries_raise_augment_error():
    img = Image.new("RGB", (10, 10))
    with pytest.raises(AugmentError):
        apply_crop(img, (5, 5, 8, 8), 4)
    with pytest.raises(AugmentError):
        parse_entry([[1, 2, 3]])
    with pytest.raises(AugmentError):
        parse_entry([[0, 0, 5, 5], [[99, 0.1]]])
    assert parse_entry([[0, 0, 5, 5], None]) == ((0, 0, 5, 5), None)


def test_pth_gz_teacher_embeddings_when_torch_is_installed(tmp_path):
    torch = pytest.importorskip("torch", reason="pth.gz teacher embeddings are only read when torch is installed")
    buf = io.BytesIO()
    torch.save({"image_emb": torch.ones(1, 4), "text_emb": torch.full((2, 4), 2.0)}, buf)
    members = _good_members("p1", npz=False) + [("p1.pth.gz", gzip.compress(buf.getvalue()))]
    _tar(tmp_path / "p.tar", members)
    from quantize.teacher import load_pth_gz

    stats = ReadStats()
    (s,) = list(iter_samples(tmp_path / "p.tar", stats, pth_loader=load_pth_gz))
    np.testing.assert_array_equal(s.text_emb, np.full((2, 4), 2.0, np.float32))
    (s,) = list(iter_samples(tmp_path / "p.tar", stats))  # without the build side's loader: noted, not read
    assert s.image_emb is None and any("pth.gz" in n for n in stats.notes)


def test_plain_image_folder_with_captions_and_globs(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / f"im{k}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    (tmp_path / "captions.tsv").write_text("im0.png\ta red thing\nim2\ta blue thing\n")
    stats = ReadStats()
    got = {s.key: s.caption for s in iter_samples(tmp_path, stats)}
    assert got == {"im0": "a red thing", "im1": None, "im2": "a blue thing"} and stats.skipped == 1
    assert [p.name for p in resolve_sources(str(tmp_path / "im*.png"))] == ["im0.png", "im1.png", "im2.png"]
    with pytest.raises(ShardError, match="matches no file"):
        resolve_sources(str(tmp_path / "*.tar"))
    with pytest.raises(ShardError, match="does not exist"):
        list(iter_samples(tmp_path / "missing"))


def test_strict_mode_names_the_shard_and_sample_and_plain_webdataset_needs_no_paug(tmp_path):
    broken = [(n, b"not an image" if n.endswith(".png") else p) for n, p in _good_members("k2")]
    bad = _tar(tmp_path / "bad.tar", _good_members("ok") + broken)
    stats = ReadStats()
    assert [s.key for s in iter_samples(bad, stats)] == ["ok"] and stats.reasons == {"undecodable image": 1}
    with pytest.raises(ShardError, match=r"bad\.tar: sample 'k2': undecodable image"):
        list(iter_samples(bad, strict=True))
    incomplete = _tar(tmp_path / "inc.tar", _good_members("k3", npz=False))
    with pytest.raises(ShardError, match="sample 'k3': missing 'npz'"):
        list(iter_samples(incomplete, strict=True))
    plain = _tar(tmp_path / "plain.tar", [(n, p) for n, p in _good_members("k4") if n.endswith((".png", ".txt"))])
    assert list(iter_samples(plain)) == []
    (s,) = list(iter_samples(plain, reinforced=False))
    assert s.caption == "a caption" and s.param_aug == [] and s.image_bytes.startswith(b"\x89PNG")
