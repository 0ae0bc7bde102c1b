"""Remembered sha256 digests, so a bundle's large files are not re-hashed on every start.

A digest is reused only while the file's (device, inode, size, mtime_ns, ctime_ns) are what they were when
it was hashed. Any write to a file moves its ctime to the current time, and no system call sets ctime back
(os.utime sets only atime and mtime), so a truncated, appended or rewritten file is hashed again and
caught, even if its size and mtime were restored. What the cache does not catch: a change made by someone
who can also set the system clock or write the block device (root), on a filesystem whose ctime is not
kept, or by someone who can write the cache file itself. `verify="full"` re-hashes every file every time.

The cache is a small JSON file, $EDGECLIP_HOME/verified-files.json, written atomically; when it cannot be
read or written (read-only home) files are simply hashed, as without it.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable, Optional

from edgeclip.files import sha256_file

CACHE_NAME = "verified-files.json"
CACHE_VERSION = 1
MAX_ENTRIES = 512  # the oldest entries are dropped beyond this (a re-hash is the only cost)

_lock = threading.Lock()


def cache_path() -> Path:
    """Where the digests are kept: $EDGECLIP_HOME/verified-files.json."""
    from edgeclip.paths import edgeclip_home

    return edgeclip_home() / CACHE_NAME


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("files"), dict):
        return {}
    return data["files"]


def _write(path: Path, files: dict) -> None:
    """Replace the cache file atomically; silently keep going when the folder is not writable."""
    from edgeclip.files import atomic_path

    kept = dict(list(files.items())[-MAX_ENTRIES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps({"version": CACHE_VERSION, "files": kept}), encoding="utf-8")
    except OSError:
        pass


def cached_sha256(path: os.PathLike, hasher: Optional[Callable[[os.PathLike], str]] = None) -> str:
    """sha256 of `path`: remembered from an earlier call while the file's identity is unchanged, else hashed
    with `hasher` (default edgeclip.files.sha256_file) and remembered."""
    hasher = hasher or sha256_file
    real = os.path.realpath(path)
    before = _identity(os.stat(real))
    store = cache_path()
    with _lock:
        entry = _read(store).get(real)
    if isinstance(entry, dict) and entry.get("identity") == before and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hasher(real)
    if _identity(os.stat(real)) != before:  # changed while being hashed: do not remember a torn read
        return digest
    with _lock:
        files = _read(store)
        files.pop(real, None)
        files[real] = {"identity": before, "sha256": digest}
        _write(store, files)
    return digest


__all__ = ["CACHE_NAME", "cache_path", "cached_sha256"]
