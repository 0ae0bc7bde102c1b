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

Entries are edgeclip.file_cache entries: digest-checked on every load, removed and built again when damaged,
written whole. When the folder cannot be written, or anything in saving fails, the session is simply built
from the source graph, as without the cache.
"""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Callable, Optional, Sequence

from edgeclip import file_cache
from edgeclip.errors import EdgeclipError

log = logging.getLogger("edgeclip")

KIND = "graphs"
CACHE_VERSION = 1
MAX_ENTRIES = 64  # the least recently used entries beyond this many, or beyond MAX_BYTES together, are removed
MAX_BYTES = 4 << 30
OPTIMIZATION_LEVEL = "ORT_ENABLE_ALL"
GRAPH, DATA = "graph.onnx", "graph.data"
EXTERNAL_MIN_BYTES = 1024  # initializers from this size on go to graph.data (mapped, not copied, at load)


def cache_dir() -> Path:
    """Where optimized graphs are kept: $EDGECLIP_HOME/graphs."""
    return file_cache.kind_dir(KIND)


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
    return file_cache.make_key(source_sha256, f"edgeclip graph cache v{CACHE_VERSION}", ort.__version__, build,
                               ",".join(providers), OPTIMIZATION_LEVEL, ",".join(sorted(disabled)), cpu_fingerprint())


def save_config() -> dict[str, str]:
    """Session config entries that make ONNX Runtime save its optimized graph (at the session's
    optimized_model_filepath) with the initializers and their pre-packed forms in DATA beside it."""
    return {"session.optimized_model_external_initializers_file_name": DATA,
            "session.optimized_model_external_initializers_min_size_in_bytes": str(EXTERNAL_MIN_BYTES),
            "session.save_external_prepacked_constant_initializers": "1"}


def cached_graph(key: str) -> Optional[Path]:
    """The entry's graph file when the entry is sound (see edgeclip.file_cache.open_entry), else None."""
    found = file_cache.open_entry(KIND, key)
    return found[0] / GRAPH if found and GRAPH in found[1]["files"] else None


def discard(key: str) -> None:
    """Remove entry `key`."""
    file_cache.remove_entry(file_cache.entry_dir(KIND, key))


def build_entry(key: str, source: Path, build: Callable[[Optional[Path]], object]) -> object:
    """Run `build(save_path)` (a session builder that saves its optimized graph there with save_config) and keep
    what it saved as entry `key`; returns the session. If nothing could be saved, `build(None)` is returned."""
    def fill(folder: Path) -> object:
        session = build(folder / GRAPH)
        if not (folder / GRAPH).is_file() or (folder / GRAPH).stat().st_size == 0:
            raise OSError("ONNX Runtime saved no optimized graph")
        return session

    try:
        session = file_cache.write_entry(KIND, key, fill, MAX_ENTRIES, MAX_BYTES, source=str(source))
    except EdgeclipError as exc:  # the cache never makes a session fail that works without it
        log.info("optimized graph of %s not cached (%s)", source, exc)
        session = None
    return session if session is not None else build(None)


__all__ = [
    "CACHE_VERSION", "DATA", "GRAPH", "MAX_BYTES", "MAX_ENTRIES", "build_entry", "cache_dir", "cached_graph",
    "cpu_fingerprint", "discard", "entry_key", "save_config",
]
