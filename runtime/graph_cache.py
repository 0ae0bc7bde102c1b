"""Pre-optimized graphs: ONNX Runtime's optimized form of a tower, saved once and loaded without re-optimizing.

The first CPU session of a graph is built as usual (all graph optimizations) and ONNX Runtime saves the
optimized graph into $EDGECLIP_HOME/graphs/<entry>/: `graph.onnx` with its weights in `graph.data`, including
the weights as the CPU kernels pre-pack them. Later sessions load that entry with optimizations off: ONNX
Runtime maps `graph.data` into memory instead of copying the weights and skips the optimizer passes and the
pre-packing. On the S0 INT8 towers this took session creation from 0.085 to 0.030 s (image) and 0.35 to
0.05 s (text), and the text tower's load peak from 275 to 90 MB (docs/runtime.md). An entry is keyed by
everything its content depends on: the source graph's sha256, the onnxruntime version and build, the
providers, the optimization level, the optimizers turned off, and the CPU (layout passes and pre-packing
pick kernels for the CPU's instruction set).

`entry.json` records the key and the sha256 of both files, checked on every load through
edgeclip.bundle.verify_cache (an unchanged file is not re-hashed). A truncated, rewritten or unreadable
entry is never used: it is removed and built again. Entries are written as a whole (a temp folder renamed
into place), so a reader never sees half an entry. When the folder cannot be written, or anything in saving
fails, the session is simply built from the source graph, as without the cache.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

from edgeclip.bundle.verify_cache import cached_sha256
from edgeclip.errors import EdgeclipError
from edgeclip.files import atomic_dir, sha256_file

log = logging.getLogger("edgeclip")

FOLDER = "graphs"
CACHE_VERSION = 1
MAX_ENTRIES = 16  # the least recently used entries beyond this are removed
STALE_TEMP_SECONDS = 3600  # a temp folder this old was left by a killed process
OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"
GRAPH, DATA, RECORD = "graph.onnx", "graph.data", "entry.json"
EXTERNAL_MIN_BYTES = 1024  # initializers from this size on go to graph.data (mapped, not copied, at load)


def cache_dir() -> Path:
    """Where optimized graphs are kept: $EDGECLIP_HOME/graphs."""
    from edgeclip.paths import edgeclip_home

    return edgeclip_home() / FOLDER


def cpu_fingerprint() -> str:
    """The machine architecture and the CPU's feature flags (from /proc/cpuinfo where there is one)."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                    break
    except OSError:
        flags = platform.processor()
    return f"{platform.machine()}|{flags}"


def entry_key(source_sha256: str, providers: Sequence[str], disabled: Sequence[str]) -> str:
    """Everything the optimized graph depends on, as one text (recorded in the entry and compared on load)."""
    import onnxruntime as ort

    build = getattr(ort, "get_build_info", lambda: "")()
    return "\n".join([f"edgeclip graph cache v{CACHE_VERSION}", source_sha256, ort.__version__, build,
                      ",".join(providers), OPTIMIZATION_LEVEL, ",".join(sorted(disabled)), cpu_fingerprint()])


def save_config() -> dict[str, str]:
    """Session config entries that make ONNX Runtime save its optimized graph (at the session's
    optimized_model_filepath) with the initializers and their pre-packed forms in DATA beside it."""
    return {"session.optimized_model_external_initializers_file_name": DATA,
            "session.optimized_model_external_initializers_min_size_in_bytes": str(EXTERNAL_MIN_BYTES),
            "session.save_external_prepacked_constant_initializers": "1"}


def _entry_dir(key: str) -> Path:
    """An entry's folder, named by the source graph's sha256 and a CRC of the whole key (zlib, not hashlib, which
    would load OpenSSL into every process; a CRC collision is a miss, the recorded key tells)."""
    source = key.split("\n")[1][:32]
    return cache_dir() / f"{source}-{zlib.crc32(key.encode('utf-8')):08x}"


def _remove(entry: Path) -> None:
    shutil.rmtree(entry, ignore_errors=True)  # a session that mapped graph.data keeps its (unlinked) file


def discard(key: str) -> None:
    """Remove entry `key`."""
    _remove(_entry_dir(key))


def cached_graph(key: str) -> Optional[Path]:
    """The entry's graph file when the entry is there and every file matches its recorded sha256; a bad entry
    is removed."""
    entry = _entry_dir(key)
    record = entry / RECORD
    if not entry.exists():
        return None
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None  # another graph's entry under a colliding name: built again and replaced
        files = meta.get("files")
        if isinstance(files, dict) and GRAPH in files and all(
                cached_sha256(entry / name) == digest for name, digest in files.items()):
            _touch(record)
            return entry / GRAPH
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    log.info("optimized graph %s is damaged or incomplete; building it again", entry)
    _remove(entry)
    return None


def _touch(record: Path) -> None:
    """Mark an entry most recently used (kept longest by _prune); nothing happens on a read-only folder."""
    try:
        os.utime(record)
    except OSError:
        pass


def build_entry(key: str, source: Path, build: Callable[[Optional[Path]], object]) -> object:
    """Run `build(save_path)` (a session builder that saves its optimized graph there with save_config) and keep
    what it saved as entry `key`; returns the session. If nothing could be saved, `build(None)` is returned."""
    entry = _entry_dir(key)
    session = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(entry, exist_ok=True) as tmp:
            session = build(tmp / GRAPH)
            names = [name for name in (GRAPH, DATA) if (tmp / name).is_file()]
            if GRAPH not in names or (tmp / GRAPH).stat().st_size == 0:
                raise OSError("ONNX Runtime saved no optimized graph")
            (tmp / RECORD).write_text(json.dumps({"key": key, "source": str(source), "files": {
                name: sha256_file(tmp / name) for name in names}}), encoding="utf-8")
        cached_graph(key)  # remembers the digests of the files at their final paths (edgeclip.bundle.verify_cache)
    except (OSError, EdgeclipError) as exc:  # the cache never makes a session fail that works without it
        log.info("optimized graph of %s not cached (%s)", source, exc)
        return session if session is not None else build(None)
    _prune()
    return session


def _prune() -> None:
    """Keep the MAX_ENTRIES most recently used entries (by their record's mtime), and remove temp folders that
    killed processes left; nothing else in the folder is touched."""
    folder = cache_dir()
    try:
        records = sorted(folder.glob(f"*/{RECORD}"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        stale = [p for p in folder.glob(".*.tmp") if time.time() - p.stat().st_mtime > STALE_TEMP_SECONDS]
    except OSError:
        return
    for path in [r.parent for r in records[MAX_ENTRIES:]] + stale:
        _remove(path)


__all__ = [
    "CACHE_VERSION", "MAX_ENTRIES", "build_entry", "cache_dir", "cached_graph", "cpu_fingerprint", "discard",
    "entry_key", "save_config",
]
