"""Common setup for the Apple-layout model tests: torch on two threads (other jobs run on the same machine)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _two_threads():
    torch = pytest.importorskip("torch", reason="the export side needs torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)
