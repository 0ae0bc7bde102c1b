"""The shard writer produces DataCompDR-format webdataset tars that plain tarfile/json/numpy read back."""

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from edgeclip.shards import ShardError, iter_samples
from quantize.shards import ReinforcedSample, write_shards


def _sample(i: int, n_aug: int = 3, n_syn: int = 5, dim: int = 8) -> ReinforcedSample:
    rng = np.random.default_rng(i)
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(jpeg, "JPEG")  # the strict reader decodes it
    return ReinforcedSample(
        key=f"s{i:04d}", image=jpeg.getvalue(), image_ext="jpg",
        caption=f"caption {i} \u00e9", syn_captions=[f"syn {i}.{k}" for k in range(n_syn)],
        param_aug=[[[1, 2, 30, 40], None if a % 2 else [[5, -4.5], [3, 12.0]]] for a in range(n_aug)],
        image_emb=rng.standard_normal((n_aug, dim)).astype(np.float32),
        text_emb=rng.standard_normal((1 + n_syn, dim)).astype(np.float32), url=f"https://example.com/{i}.jpg",
    )


@pytest.mark.parametrize("as_string", [False, True])
def test_round_trip_with_plain_tarfile(tmp_path, as_string):
    samples = [_sample(i) for i in range(5)]
    paths = write_shards(samples, tmp_path, prefix="dr", samples_per_shard=2, paug_as_json_string=as_string)
    assert [p.name for p in paths] == ["dr-000000.tar", "dr-000001.tar", "dr-000002.tar"]
    members = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for info in tar:
                members[info.name] = tar.extractfile(info).read()
    for s in samples:
        k = s.key
        assert members[f"{k}.jpg"] == s.image
        assert members[f"{k}.txt"].decode() == s.caption
        assert members[f"{k}.url.txt"].decode() == s.url
        assert json.loads(members[f"{k}.syn.json"]) == {"syn_text": s.syn_captions}
        paug = json.loads(members[f"{k}.paug.json"])["param_aug"]
        assert isinstance(paug, str) == as_string
        assert (json.loads(paug) if as_string else paug) == s.param_aug
        with np.load(io.BytesIO(members[f"{k}.npz"])) as npz:
            np.testing.assert_array_equal(npz["image_emb"], s.image_emb)
            np.testing.assert_array_equal(npz["text_emb"], s.text_emb)
    back = list(iter_samples(paths, strict=True))
    assert [b.key for b in back] == [s.key for s in samples]
    assert back[3].param_aug == samples[3].param_aug
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_bad_samples_raise_clear_errors(tmp_path):
    bad = _sample(0)
    bad.text_emb = bad.text_emb[:2]
    with pytest.raises(ShardError, match="text_emb shape"):
        write_shards([bad], tmp_path)
    with pytest.raises(ShardError, match="duplicate sample key"):
        write_shards([_sample(1), _sample(1)], tmp_path / "dup")
    dotted = _sample(2)
    dotted.key = "a.b"
    with pytest.raises(ShardError, match="key"):
        write_shards([dotted], tmp_path / "dot")


def test_reader_names_missing_member(tmp_path):
    path = write_shards([_sample(0)], tmp_path)[0]
    with tarfile.open(path) as src, tarfile.open(tmp_path / "cut.tar", "w") as dst:
        for info in src:
            if not info.name.endswith(".npz"):
                dst.addfile(info, src.extractfile(info))
    with pytest.raises(ShardError, match="missing 'npz'"):
        list(iter_samples([tmp_path / "cut.tar"], strict=True))
