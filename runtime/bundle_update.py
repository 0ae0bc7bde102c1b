"""Add derived files (ORT-format graphs, e2e graphs, operator configs) to an existing bundle atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edgeclip.bundle import MANIFEST_NAME, sha256_file


def install_file(src: Path, root: Path, name: str) -> str:
    """Move ``src`` to ``root/name`` with ``os.replace`` (same filesystem); return its sha256."""
    digest = sha256_file(src)
    os.replace(src, root / name)
    return digest


def write_manifest(root: Path, manifest: dict) -> None:
    """Rewrite ``root/manifest.json`` atomically (temp file in the bundle, then rename)."""
    path = root / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(root: Path) -> dict:
    """The raw manifest dict (call after ``load_bundle`` has validated and verified the bundle)."""
    return json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
