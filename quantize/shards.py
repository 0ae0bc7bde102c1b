"""Write reinforced samples as DataCompDR-format webdataset tar shards (numpy + stdlib only).

Each sample ``<key>`` becomes the tar members ``<key>.<jpg|png|webp>``, ``<key>.url.txt``,
``<key>.txt``, ``<key>.syn.json`` (``{"syn_text": [...]}``), ``<key>.paug.json``
(``{"param_aug": [...]}``, or the list stored as a JSON string like the Hugging Face copy)
and ``<key>.npz`` (``image_emb`` [n_aug, D], ``text_emb`` [1 + n_syn, D]).
Read them back with ``edgeclip.shards.iter_samples(paths, strict=True)``.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from edgeclip.files import atomic_path
from edgeclip.shards import IMAGE_EXTS as READ_EXTS
from edgeclip.shards import ShardError

IMAGE_EXTS = tuple(ext.lstrip(".") for ext in READ_EXTS)  # what the reader takes back
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class ReinforcedSample:
    """One image with its captions, stored augmentation parameters and teacher embeddings."""

    key: str
    image: bytes
    image_ext: str
    caption: str
    syn_captions: list[str]
    param_aug: list
    image_emb: np.ndarray
    text_emb: np.ndarray
    url: str | None = field(default=None)

    def validate(self) -> None:
        """Raise ShardError if the sample would make a shard the DataCompDR readers reject."""
        where = f"sample {self.key!r}"
        if not isinstance(self.key, str) or not _KEY_RE.match(self.key):
            raise ShardError(f"{where}: key must be non-empty and use only letters, digits, '_' or '-' (no dots)")
        if self.image_ext not in IMAGE_EXTS:
            raise ShardError(f"{where}: image_ext {self.image_ext!r} is not one of {IMAGE_EXTS}")
        if not isinstance(self.image, (bytes, bytearray)) or not self.image:
            raise ShardError(f"{where}: image must be non-empty encoded bytes")
        if not isinstance(self.syn_captions, list) or not all(isinstance(c, str) for c in self.syn_captions):
            raise ShardError(f"{where}: syn_captions must be a list of str")
        if not isinstance(self.param_aug, list):
            raise ShardError(f"{where}: param_aug must be a list (one entry per stored augmentation)")
        img = np.asarray(self.image_emb)
        txt = np.asarray(self.text_emb)
        if img.ndim != 2 or img.shape[0] != len(self.param_aug):
            raise ShardError(f"{where}: image_emb shape {img.shape} must be [n_aug={len(self.param_aug)}, D]")
        if txt.ndim != 2 or txt.shape[0] != 1 + len(self.syn_captions):
            raise ShardError(f"{where}: text_emb shape {txt.shape} must be [1 + n_syn={1 + len(self.syn_captions)}, D]")
        if img.shape[1] != txt.shape[1]:
            raise ShardError(f"{where}: image_emb and text_emb disagree on D ({img.shape[1]} vs {txt.shape[1]})")


def _members(sample: ReinforcedSample, paug_as_json_string: bool) -> list[tuple[str, bytes]]:
    """Serialize one sample into (member name, payload) pairs in a fixed order."""
    npz = io.BytesIO()
    np.savez(npz, image_emb=np.asarray(sample.image_emb), text_emb=np.asarray(sample.text_emb))
    paug: object = json.dumps(sample.param_aug) if paug_as_json_string else sample.param_aug
    k = sample.key
    return [
        (f"{k}.{sample.image_ext}", bytes(sample.image)),
        (f"{k}.url.txt", (sample.url or "").encode("utf-8")),
        (f"{k}.txt", sample.caption.encode("utf-8")),
        (f"{k}.syn.json", json.dumps({"syn_text": sample.syn_captions}).encode("utf-8")),
        (f"{k}.paug.json", json.dumps({"param_aug": paug}).encode("utf-8")),
        (f"{k}.npz", npz.getvalue()),
    ]


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """Write a reproducible tar (fixed mtime/owner) to a temp file next to ``path``, then rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, payload in members:
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                info.mtime = 0
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(payload))


def write_shards(
    samples: Iterable[ReinforcedSample],
    out_dir: str | os.PathLike,
    prefix: str = "shard",
    samples_per_shard: int = 100,
    paug_as_json_string: bool = False,
) -> list[Path]:
    """Write samples into ``out_dir/<prefix>-000000.tar, ...``; each shard appears atomically.

    Returns the shard paths in order. Duplicate keys or malformed samples raise ShardError
    before the offending shard is written.
    """
    if samples_per_shard < 1:
        raise ShardError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    seen: set[str] = set()
    pending: list[tuple[str, bytes]] = []
    count = 0

    def flush() -> None:
        path = out / f"{prefix}-{len(paths):06d}.tar"
        _write_tar(path, pending)
        paths.append(path)
        pending.clear()

    for sample in samples:
        sample.validate()
        if sample.key in seen:
            raise ShardError(f"duplicate sample key {sample.key!r}")
        seen.add(sample.key)
        pending.extend(_members(sample, paug_as_json_string))
        count += 1
        if count % samples_per_shard == 0:
            flush()
    if pending:
        flush()
    return paths
