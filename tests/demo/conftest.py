"""Shared, session-scoped synthetic data for the demo tests (generated once, a few seconds)."""

from pathlib import Path

import pytest

from quantize.synthetic import ensure_dataset

# eval has the default split's size: samples depend only on (seed, split, index), so this eval
# split is exactly the one the committed checkpoint is judged on.
SMALL_SIZES = {"train": 48, "calib": 8, "eval": 400}


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    return ensure_dataset(tmp_path_factory.mktemp("demo-data") / "synthetic", seed=0, sizes=SMALL_SIZES,
                          progress=False)
