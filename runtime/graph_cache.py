"""Pre-optimized graphs: ONNX Runtime's optimized form of a tower, saved once and loaded without re-optimizing.

The first CPU session of a graph is built as usual (all graph optimizations) and ONNX Runtime saves the
optimized graph into $EDGECLIP_HOME/graphs/. Later sessions load that file with optimizations off, which
skips the optimizer passes. The graph is saved as ONNX, not in ORT format: on the S0 INT8 towers both load
equally fast, but an ORT-format file is read whole into memory next to the initializers made from it, which
raised the text tower's load peak by 121 MB (docs/runtime.md). An entry is keyed by everything its content depends on: the source
graph's sha256, the onnxruntime version and build, the providers, the optimization level, the optimizers
turned off, and the CPU (layout passes pick kernels for the CPU's instruction set).

Each entry is `<key>.onnx` plus `<key>.json` recording the graph file's sha256. The digest is checked on every
load (through edgeclip.bundle.verify_cache, so an unchanged file is not re-hashed); a truncated, rewritten
or unreadable entry is never used: it is removed and built again. When the folder cannot be written the
session is simply built from the source graph, as without the cache.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import zlib
from pathlib import Path
from typing import Callable, Optional, Sequence

from edgeclip.bundle.verify_cache import cached_sha256
from edgeclip.files import atomic_path

log = logging.getLogger("edgeclip")

FOLDER = "graphs"
CACHE_VERSION = 1
MAX_ENTRIES = 16  # the least recently used entries beyond this are removed
OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"


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


def _paths(key: str) -> tuple[Path, Path]:
    """The entry's graph and record files: named by the source graph's sha256 and a CRC of the whole key (zlib,
    not hashlib, which would load OpenSSL into every process; a CRC collision is a miss, the record tells)."""
    source = key.split("\n")[1][:32]
    name = f"{source}-{zlib.crc32(key.encode('utf-8')):08x}"
    folder = cache_dir()
    return folder / f"{name}.onnx", folder / f"{name}.json"


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def _touch(record: Path) -> None:
    """Mark an entry most recently used (kept longest by _prune); nothing happens on a read-only folder."""
    try:
        os.utime(record)
    except OSError:
        pass


def discard(key: str) -> None:
    """Remove entry `key` (both files)."""
    _remove(*_paths(key))


def cached_graph(key: str) -> Optional[Path]:
    """The entry's graph file when it is present and matches its recorded sha256; a bad entry is removed."""
    graph, record = _paths(key)
    if not record.is_file():
        return None
    try:
        meta = json.loads(record.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None  # another graph's entry under a colliding name: built again and replaced
        if cached_sha256(graph) == meta.get("sha256"):
            _touch(record)
            return graph
    except (OSError, ValueError, AttributeError):
        pass
    log.info("optimized graph %s is damaged or incomplete; building it again", graph)
    discard(key)
    return None


def build_entry(key: str, source: Path, build: Callable[[Optional[Path]], object]) -> object:
    """Run `build(save_path)` (a session builder that saves its optimized graph to save_path) and keep what it
    saved as entry `key`; returns the session. With no writable cache folder, `build(None)` is returned."""
    graph, record = _paths(key)
    session = None
    try:
        graph.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(graph) as tmp_graph:
            session = build(tmp_graph)
            if not tmp_graph.is_file() or tmp_graph.stat().st_size == 0:
                raise OSError("ONNX Runtime saved no optimized graph")
        with atomic_path(record) as tmp_record:
            tmp_record.write_text(json.dumps({"key": key, "source": str(source),
                                              "sha256": cached_sha256(graph)}), encoding="utf-8")
    except OSError as exc:
        log.info("optimized graph of %s not cached (%s)", source, exc)
        discard(key)
        return session if session is not None else build(None)
    _prune()
    return session


def _prune() -> None:
    """Keep the MAX_ENTRIES most recently used entries (by their record's mtime); remove the rest."""
    try:
        records = sorted(cache_dir().glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    except OSError:
        return
    for record in records[MAX_ENTRIES:]:
        _remove(record.with_suffix(".onnx"), record)


__all__ = [
    "CACHE_VERSION", "MAX_ENTRIES", "build_entry", "cache_dir", "cached_graph", "cpu_fingerprint", "discard", "entry_key",
]
