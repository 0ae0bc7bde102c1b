"""The HF `tokenizers` backend as edgeclip runs it, saved once per tokenizer.json ($EDGECLIP_HOME/tokenizers/).

Building the backend parses and checks the whole tokenizer.json in Python (49,408 tokens, 48,894 merges) and
rebuilds it for Rust: about 0.24 s and a 30 MB transient peak, much of which Python keeps. A later process
loads the saved Rust tokenizer directly (`Tokenizer.from_file`), with the start/end tokens recorded beside it.
Entries are edgeclip.file_cache entries (digest-checked, removed and built again when damaged), keyed by the
tokenizer.json's sha256, the `tokenizers` version and the code point table the pre-tokenizer is spelled from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgeclip import file_cache
from edgeclip.bundle.verify_cache import cached_sha256
from edgeclip.tokenizer.backends import HFBackend
from edgeclip.tokenizer.pretokenize import CLASSES_FILE, compile_pattern
from edgeclip.tokenizer.tokenizer_file import read_tokenizer_json

KIND = "tokenizers"
CACHE_VERSION = 1
MAX_ENTRIES = 8
MAX_BYTES = 64 << 20
SAVED = "tokenizer.json"


def _key(path: Path) -> str:
    import tokenizers

    return file_cache.make_key(cached_sha256(path), f"edgeclip tokenizer cache v{CACHE_VERSION}",
                               tokenizers.__version__, cached_sha256(CLASSES_FILE))


def hf_backend(path: Path) -> tuple[HFBackend, int, int]:
    """(HF backend, start id, end id) for the CLIP tokenizer.json at `path`: from the saved entry when there is a
    sound one, else built from the file (which is checked; TokenizerError when it is not a CLIP tokenizer) and saved."""
    try:
        key: Optional[str] = _key(path)
    except OSError:
        key = None  # no such file: read_tokenizer_json says so
    loaded = _load(key) if key else None
    if loaded is not None:
        return loaded
    spec = read_tokenizer_json(path)
    backend = HFBackend.from_spec(spec, compile_pattern(spec.specials))
    if key:
        file_cache.write_entry(KIND, key, lambda folder: backend.save(folder / SAVED), MAX_ENTRIES, MAX_BYTES,
                               specials=list(spec.specials), special_ids=[spec.sot_id, spec.eot_id])
    return backend, spec.sot_id, spec.eot_id


def _load(key: str) -> Optional[tuple[HFBackend, int, int]]:
    """The saved backend of entry `key`, or None (no entry, or one `tokenizers` refuses: then it is removed)."""
    found = file_cache.open_entry(KIND, key)
    if found is None:
        return None
    entry, meta = found
    try:
        specials, (sot, eot) = tuple(meta["specials"]), meta["special_ids"]
        backend = HFBackend.load(entry / SAVED, dict(zip(specials, (sot, eot))), compile_pattern(specials))
    except Exception:  # tokenizers raises its own exception types; a bad entry is rebuilt, never fatal
        file_cache.remove_entry(entry)
        return None
    return backend, int(sot), int(eot)


__all__ = ["hf_backend"]
