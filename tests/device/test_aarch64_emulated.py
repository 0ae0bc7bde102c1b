"""Emulated arm64 (qemu-user) run of the device side vs x86: cosine >= 0.99999 with both tokenizer backends.

Slow (minutes; first run downloads Debian arm64 packages and aarch64 wheels into .cache/aarch64/),
so it sits behind the ``aarch64`` marker: ``python -m pytest -m aarch64 tests/device``.
Set EDGECLIP_AARCH64_BUNDLE to test a given bundle; otherwise the demo bundle is exported.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "aarch64"))

import run_check  # noqa: E402


@pytest.mark.aarch64
def test_device_side_on_emulated_aarch64_matches_x86():
    if shutil.which("apt-get") is None and shutil.which("qemu-aarch64-static") is None:
        pytest.skip("needs a Debian/Ubuntu host (apt-get) or an installed qemu-aarch64-static")
    bundle = os.environ.get("EDGECLIP_AARCH64_BUNDLE")
    summary = run_check.check(Path(bundle) if bundle else None)
    for name, backend in summary["backends"].items():
        assert backend["arm"]["machine"] == "aarch64", name
        assert not backend["arm"]["torch_loaded"], name
        assert backend["tokens_equal"], name
        assert backend["image_min_cos"] >= run_check.MIN_COS, (name, backend)
        assert backend["text_min_cos"] >= run_check.MIN_COS, (name, backend)
    assert summary["backends_tokens_equal"]
