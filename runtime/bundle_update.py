"""Add derived files (ORT-format graphs, e2e graphs, operator configs) to an existing bundle atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeclip.bundle import MANIFEST_NAME, sha256_file
from edgeclip.files import atomic_path


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
