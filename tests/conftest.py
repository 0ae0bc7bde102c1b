"""Every test runs offline and with a private, empty $EDGECLIP_HOME, so `make test` never reads or fills the
user's own caches (bundles, verified digests, optimized graphs, tokenizers, datasets)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _offline_with_a_private_home(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("EDGECLIP_HOME", str(tmp_path_factory.mktemp("edgeclip_home")))
    yield
    mp.undo()
