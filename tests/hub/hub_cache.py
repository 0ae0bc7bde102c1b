"""Lay out a Hugging Face Hub cache by hand, in the format huggingface_hub reads (no network involved).

models--ORG--REPO/refs/<branch> holds the commit hash; snapshots/<commit>/<file> are relative symlinks to
blobs/<etag>, where the etag is the sha256 for LFS files (the .onnx towers) and git's blob sha1 for the others.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

LFS_SUFFIXES = (".onnx", ".ort", ".bin", ".safetensors")


def _etag(name: str, data: bytes) -> str:
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def lay_out_cache(cache: Path, repo: str, bundle: Path, commit: str = "a" * 40, branch: str = "main",
                  skip: Iterable[str] = ()) -> Path:
    """Put every file of `bundle` (but `skip`) into `cache` as commit `commit` of `repo`; return the snapshot dir."""
    folder = repo_folder(cache, repo)
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / branch).write_text(commit)
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        name = path.relative_to(bundle).as_posix()
        if name in skip:
            continue
        data = path.read_bytes()
        blob = folder / "blobs" / _etag(name, data)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot
