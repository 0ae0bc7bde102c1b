"""Files derived from a source file once and reused by later processes, kept under $EDGECLIP_HOME/<kind>/.

An entry is a folder named after the source's sha256 and a CRC of its whole key (everything its content
depends on), holding the derived files and `entry.json`: the key and the sha256 of every file. An entry is
used only while the key matches and every file still has its recorded digest (checked through
edgeclip.bundle.verify_cache, so an unchanged file is not re-hashed); a truncated, rewritten or incomplete
entry is removed and the caller builds it again. Entries are written as a whole (a temp folder renamed into
place), so a reader never sees half of one. The least recently used entries beyond a kind's limits (entries
and bytes) and temp folders left by killed processes are removed; nothing else in the folder is touched.

Users: runtime.graph_cache (optimized ONNX graphs) and edgeclip.tokenizer.hf_cache (the HF tokenizer as
edgeclip runs it).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Callable, Optional, TypeVar

from edgeclip.bundle.verify_cache import cached_sha256

log = logging.getLogger("edgeclip")

RECORD = "entry.json"
STALE_TEMP_SECONDS = 3600  # a temp folder this old was left by a killed process
T = TypeVar("T")


def kind_dir(kind: str) -> Path:
    """Where entries of one kind are kept: $EDGECLIP_HOME/<kind>."""
    from edgeclip.paths import edgeclip_home

    return edgeclip_home() / kind


def make_key(source_sha256: str, *parts: str) -> str:
    """One text of the source's sha256 and everything else the derived files depend on."""
    return "\n".join([source_sha256, *parts])


def entry_dir(kind: str, key: str) -> Path:
    """The entry's folder: the source's sha256 and a CRC of the whole key (zlib, not hashlib, which would load
    OpenSSL into every process; a CRC collision is only a miss, the recorded key tells)."""
    return kind_dir(kind) / f"{key.split(chr(10))[0][:32]}-{zlib.crc32(key.encode('utf-8')):08x}"


def open_entry(kind: str, key: str) -> Optional[tuple[Path, dict]]:
    """(entry folder, its record) when the entry exists, is `key`'s and every file matches its digest; None
    otherwise. A damaged entry is removed."""
    entry = entry_dir(kind, key)
    if not entry.exists():
        return None
    record = entry / RECORD
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None  # another source's entry under a colliding name: built again and replaced
        files = meta.get("files")
        if isinstance(files, dict) and files and all(
                cached_sha256(entry / name) == digest for name, digest in files.items()):
            _touch(record)
            return entry, meta
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    log.info("cached %s %s is damaged or incomplete; building it again", kind, entry)
    remove_entry(entry)
    return None


def remove_entry(entry: Path) -> None:
    """Remove an entry folder (a process that mapped one of its files keeps that unlinked file)."""
    shutil.rmtree(entry, ignore_errors=True)


def write_entry(kind: str, key: str, fill: Callable[[Path], T], max_entries: int, max_bytes: int,
                **fields) -> Optional[T]:
    """Run fill(folder) to write an entry's files into a temp folder, record the key, their digests and `fields`,
    and move the folder into place; returns fill's result. None when the cache folder cannot be written (a
    read-only or full home): the caller goes on without the cache. Other exceptions from fill propagate."""
    from edgeclip.files import atomic_dir, sha256_file

    entry = entry_dir(kind, key)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(entry, exist_ok=True) as tmp:
            result = fill(tmp)
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / RECORD).write_text(json.dumps({"key": key, "files": files, **fields}), encoding="utf-8")
    except OSError as exc:
        log.info("%s of %s not cached (%s)", kind, entry.name, exc)
        return None
    open_entry(kind, key)  # remembers the files' digests at their final paths (edgeclip.bundle.verify_cache)
    _prune(kind, max_entries, max_bytes)
    return result


def _touch(record: Path) -> None:
    """Mark an entry most recently used (kept longest by _prune); nothing happens on a read-only folder."""
    try:
        os.utime(record)
    except OSError:
        pass


def _prune(kind: str, max_entries: int, max_bytes: int) -> None:
    """Keep the most recently used entries (by their record's mtime) while they are at most max_entries and
    max_bytes together (the newest is always kept); drop stale temp folders."""
    folder = kind_dir(kind)
    try:
        records = sorted(folder.glob(f"*/{RECORD}"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        sizes = [sum(f.stat().st_size for f in r.parent.iterdir()) for r in records]
        stale = [p for p in folder.glob(".*.tmp") if time.time() - p.stat().st_mtime > STALE_TEMP_SECONDS]
    except OSError:
        return
    total, drop = 0, list(stale)
    for i, (record, size) in enumerate(zip(records, sizes)):
        total += size
        if i and (i >= max_entries or total > max_bytes):
            drop.append(record.parent)
    for path in drop:
        remove_entry(path)


__all__ = ["RECORD", "entry_dir", "kind_dir", "make_key", "open_entry", "remove_entry", "write_entry"]
