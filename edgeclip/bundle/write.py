"""Write and amend bundles (torch-free; used by export, quantize and runtime tools).

write_bundle stages, hashes, writes the manifest, verifies and renames: a failure at any point removes the
staging directory, so a bundle either appears complete or not at all. install_file/write_manifest add derived
files (ORT-format graphs, e2e graphs, operator configs) to an existing bundle atomically.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Mapping, Union

from edgeclip.bundle.read import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, load_bundle, sha256_file
from edgeclip.errors import BundleError
from edgeclip.files import atomic_path

PathLike = Union[str, Path]


def _fill_hashes(node: object, hashes: Mapping[str, str], used: set) -> None:
    """Set `sha256` on every manifest dict whose `file` is one of the bundle's files."""
    if isinstance(node, dict):
        name = node.get("file")
        if isinstance(name, str) and name in hashes:
            node["sha256"] = hashes[name]
            used.add(name)
        for key, value in node.items():
            if key != "source_checkpoint":  # describes a file outside the bundle
                _fill_hashes(value, hashes, used)
    elif isinstance(node, list):
        for value in node:
            _fill_hashes(value, hashes, used)


def _safe_name(name: str) -> str:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name or name == MANIFEST_NAME:
        raise BundleError(f"bundle file name {name!r} is not allowed")
    return name


def _replace_dir(stage: Path, out_dir: Path) -> None:
    """Move `stage` to `out_dir`; an existing bundle there is swapped out and removed afterwards."""
    if not out_dir.exists():
        os.replace(stage, out_dir)
        return
    if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file()):
        raise BundleError(f"{out_dir} exists and is not an edgeclip bundle; refusing to overwrite it")
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.replace(out_dir, old / "bundle")
    try:
        os.replace(stage, out_dir)
    except OSError:
        os.replace(old / "bundle", out_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def write_bundle(out_dir: PathLike, manifest: dict, files: Mapping[str, PathLike]) -> Path:
    """Write `files` (bundle name -> source path) and `manifest` into `out_dir` atomically; return `out_dir`.

    sha256 fields are filled for every manifest entry naming one of `files`; files named nowhere else
    are listed under `extra_files`. The staged bundle is verified with `edgeclip.load_bundle` before the rename.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        hashes = {}
        for name, src in files.items():
            dest = stage / _safe_name(name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dest)
            except OSError as exc:
                raise BundleError(f"cannot copy {src} into the bundle as {name}: {exc}") from None
            hashes[name] = sha256_file(dest)
        full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **copy.deepcopy(manifest)}
        used: set = set()
        _fill_hashes(full, hashes, used)
        extra = {**(full.get("extra_files") or {}), **{n: h for n, h in hashes.items() if n not in used}}
        full["extra_files"] = extra or {}
        (stage / MANIFEST_NAME).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        load_bundle(stage, verify=True)
        _replace_dir(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out_dir


def install_file(src: Path, root: Path, name: str) -> str:
    """Move ``src`` to ``root/name`` with ``os.replace`` (same filesystem); return its sha256."""
    digest = sha256_file(src)
    os.replace(src, root / name)
    return digest


def write_manifest(root: Path, manifest: dict) -> None:
    """Rewrite ``root/manifest.json`` atomically (temp file in the bundle, then rename)."""
    path = root / MANIFEST_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(root: Path) -> dict:
    """The raw manifest dict (call after ``load_bundle`` has validated and verified the bundle)."""
    return json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
