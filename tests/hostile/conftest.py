"""Shared fixtures of the hostile-input tests: tiny bundles and helpers to tamper with a copy of one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

from tests.runtime.tiny_bundle import make_tiny_bundle


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """A good tiny bundle (image 32x32 and text towers, embed_dim 16); never modified by a test."""
    return make_tiny_bundle(tmp_path_factory.mktemp("hostile") / "tiny")


def copy_bundle(src: Path, dst: Path, edit: Callable[[dict], None] | None = None) -> Path:
    """Copy a bundle to `dst` and apply `edit` to its manifest (written back as plain JSON, like a user would)."""
    shutil.copytree(src, dst)
    if edit is not None:
        path = dst / "manifest.json"
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(manifest))
    return dst
