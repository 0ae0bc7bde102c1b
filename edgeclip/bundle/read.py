"""Load and verify an edgeclip bundle directory (format in docs/bundle.md): version check and sha256 of every file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

from edgeclip.bundle.manifest import (DEFAULT_CONTEXT_LENGTH, FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, TOWERS,
                                      check_inside, check_manifest)
from edgeclip.errors import BundleError
from edgeclip.files import sha256_file
from edgeclip.hub import is_hub_ref, resolve_bundle


PathLike = Union[str, Path]
MAX_MANIFEST_BYTES = 16 << 20


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its directory and parsed manifest, with paths of the towers and tokenizer."""

    root: Path
    manifest: dict

    @property
    def model_id(self) -> str:
        return str(self.manifest.get("model_id", "unknown"))

    @property
    def embed_dim(self) -> Optional[int]:
        dim = self.manifest.get("embed_dim")
        return int(dim) if dim is not None else None

    @property
    def towers(self) -> dict:
        return self.manifest["towers"]

    def tower_path(self, name: str) -> Path:
        """Path of the ONNX file of tower `name` ("image" or "text"); BundleError if the bundle lacks it."""
        if name not in self.towers:
            raise BundleError(f"bundle {self.root} has no {name} tower (towers: {', '.join(self.towers) or 'none'})")
        return self.root / self.towers[name]["file"]

    def ort_path(self, name: str) -> Optional[Path]:
        """Path of tower `name`'s ORT-format alternate (made by `python -m runtime.ortformat`), or None."""
        alt = self.towers.get(name, {}).get("alternates", {}).get("ort")
        return self.root / alt["file"] if alt else None

    @property
    def image_path(self) -> Path:
        return self.tower_path("image")

    @property
    def text_path(self) -> Path:
        return self.tower_path("text")

    @property
    def tokenizer_path(self) -> Optional[Path]:
        """The bundle's tokenizer.json, or None when the manifest names none."""
        tok = self.manifest.get("tokenizer") or {}
        return self.root / tok["file"] if tok.get("file") else None

    @property
    def context_length(self) -> int:
        """Tokens per text the text tower takes: the tokenizer block's context_length, else CLIP's 77."""
        return int((self.manifest.get("tokenizer") or {}).get("context_length", DEFAULT_CONTEXT_LENGTH))

    @property
    def preprocess(self) -> dict:
        return self.manifest.get("preprocess") or {}

    def files(self) -> Iterator[tuple[str, Optional[str]]]:
        """Every (file name, expected sha256) the manifest names inside the bundle."""
        yield from _named_files(self.manifest)


def _named_files(manifest: dict) -> Iterator[tuple[str, Optional[str]]]:
    for tower in manifest.get("towers", {}).values():
        yield tower["file"], tower.get("sha256")
        for alt in (tower.get("alternates") or {}).values():
            if isinstance(alt, dict) and alt.get("file"):
                yield alt["file"], alt.get("sha256")
    tok = manifest.get("tokenizer") or {}
    if tok.get("file"):
        yield tok["file"], tok.get("sha256")
    for name, digest in (manifest.get("extra_files") or {}).items():
        yield name, digest


def write_journals(root: Path) -> list[Path]:
    """The journals of bundle writes to `root` that have not finished (running or killed; edgeclip.bundle.write)."""
    return sorted(root.parent.glob(f".{root.name}.edgeclip-*.journal"))


def _read_manifest(root: Path) -> dict:
    if not root.exists():
        journal = next(iter(write_journals(root)), None)
        if journal is not None:
            raise BundleError(f"bundle directory not found: {root}; a write to it was cut short and left {journal.name} "
                              f"beside it: `edgeclip recover {root}` finishes or undoes that write (so does the next "
                              "export or quantize run to the same folder)")
        raise BundleError(f"bundle directory not found: {root}")
    if not root.is_dir():
        raise BundleError(f"a bundle is a directory, but {root} is a file")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{root} is not an edgeclip bundle: {MANIFEST_NAME} is missing")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is {size} bytes; a manifest is a few KB (at most {MAX_MANIFEST_BYTES}), refused")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot parse {path}: {exc}") from None
    except RecursionError:
        raise BundleError(f"cannot parse {path}: JSON nested too deeply") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return manifest


def _check_structure(root: Path, manifest: dict) -> None:
    """The whole manifest against its schema, then every named file inside the bundle folder (symlinks resolved)."""
    check_manifest(manifest, root / MANIFEST_NAME)
    check_inside(root, [name for name, _ in _named_files(manifest)])


def verify_files(bundle: Bundle, full: bool = True) -> None:
    """Check that every file the manifest names exists and has its recorded sha256; name the first bad one.
    `full=False` reuses digests remembered for unchanged files (edgeclip.bundle.verify_cache)."""
    from edgeclip.bundle.verify_cache import cached_sha256

    for name, expected in bundle.files():
        path = bundle.root / name
        if not path.is_file():
            raise BundleError(f"bundle {bundle.root}: file {name} is missing")
        if not expected:
            raise BundleError(f"bundle {bundle.root}: manifest records no sha256 for {name}")
        actual = sha256_file(path) if full else cached_sha256(path, sha256_file)
        if actual != expected:
            raise BundleError(
                f"bundle {bundle.root}: file {name} does not match its sha256 in {MANIFEST_NAME} "
                f"(truncated, corrupted or modified; expected {expected[:12]}…, got {actual[:12]}…); re-copy or re-export it"
            )


def load_bundle(path: Union[PathLike, Bundle], verify: Union[bool, str] = True) -> Bundle:
    """Read a bundle's manifest, refuse newer formats, and (by default) verify every file's sha256 (a Bundle passes through).

    `path` is a bundle folder or `hf-hub:ORG/REPO[@REVISION]`, fetched into the Hugging Face cache first.
    """
    if isinstance(path, Bundle):
        return path
    if is_hub_ref(path):
        path = resolve_bundle(path, lambda root: [name for name, _ in load_bundle(root, verify=False).files()])
    root = Path(path).expanduser()
    manifest = _read_manifest(root)
    _check_structure(root, manifest)
    bundle = Bundle(root=root, manifest=manifest)
    if verify not in (True, False, "full"):
        raise BundleError(f"verify must be True (hash files that changed since last verified), 'full' or False, got {verify!r}")
    if verify:
        verify_files(bundle, full=verify == "full")
    return bundle


__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_NAME", "Bundle", "BundleError", "load_bundle", "sha256_file", "verify_files"]
