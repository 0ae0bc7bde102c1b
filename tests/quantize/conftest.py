"""Session fixtures for quantizer tests: a tiny fp32 bundle and small reinforced shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from quantize_fixtures import make_samples, write_tiny_bundle


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny-fp32")


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    """A dataset root with calib/ (paug as JSON strings, like the HF copy) and eval/ (paug as lists)."""
    from quantize.shards import write_shards

    root = tmp_path_factory.mktemp("shards")
    write_shards(make_samples(40, seed=1), root / "calib", prefix="calib", samples_per_shard=16,
                 paug_as_json_string=True)
    write_shards(make_samples(12, seed=2), root / "eval", prefix="eval", samples_per_shard=16)
    (root / "README").write_text(json.dumps({"what": "tiny test shards"}))
    return root
