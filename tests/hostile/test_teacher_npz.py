"""A truncated teacher .npz and non-finite teacher embeddings are skipped and counted like other malformed samples."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from edgeclip.shards import ReadStats, iter_samples


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _npz(image_emb, text_emb) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, image_emb=image_emb, text_emb=text_emb)
    return buf.getvalue()


def _sample(key: str, npz: bytes) -> list[tuple[str, bytes]]:
    return [(f"{key}.png", _png()), (f"{key}.txt", b"a caption"),
            (f"{key}.syn.json", json.dumps({"syn_text": ["syn"]}).encode()),
            (f"{key}.paug.json", json.dumps({"param_aug": [[[0, 0, 10, 10], None]]}).encode()),
            (f"{key}.npz", npz)]


def _shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for members in samples:
            for name, payload in members:
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


GOOD = _npz(np.ones((1, 4), np.float32), np.ones((2, 4), np.float32))
BAD = {
    "cut after the zip header": GOOD[:40],
    "cut in the middle": GOOD[: len(GOOD) // 2],
    "cut before the central directory": GOOD[:-30],
    "all-NaN image_emb": _npz(np.full((1, 4), np.nan, np.float32), np.ones((2, 4), np.float32)),
    "all-NaN text_emb": _npz(np.ones((1, 4), np.float32), np.full((2, 4), np.nan, np.float32)),
    "infinite image_emb": _npz(np.full((1, 4), np.inf, np.float32), np.ones((2, 4), np.float32)),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_bad_teacher_npz_is_skipped_and_counted(tmp_path, what):
    shard = _shard(tmp_path / "s.tar", [_sample("a", GOOD), _sample("b", BAD[what]), _sample("c", GOOD)])
    stats = ReadStats()
    keys = [s.key for s in iter_samples(shard, stats)]
    assert keys == ["a", "c"]
    assert stats.read == 2 and stats.skipped == 1 and sum(stats.reasons.values()) == 1
