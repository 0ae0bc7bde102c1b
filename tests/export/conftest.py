"""Expensive setup common to the export tests: fixture checkpoints written to real files, exported bundles."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.reference_fixtures import FIXTURES, fixture_state_dict, load_fixture

# OpenCLIP fixtures alternate between the two file formats users download
OPEN_CLIP_SUFFIX = {"MobileCLIP-S1": ".bin", "MobileCLIP-S2": ".safetensors", "MobileCLIP-B": ".bin",
                    "MobileCLIP2-S0": ".safetensors", "MobileCLIP2-S2": ".bin", "MobileCLIP2-B": ".safetensors"}
S0_STEM = "mobileclip-s0.ml-mobileclip"


def fixture_stem(stem: str):
    """The ViT-B conv stem of the network that computed a fixture (open_clip's: unpadded, Apple's: padded), else None."""
    from export.registry import get_spec

    model_id, layout = FIXTURES[stem]
    if get_spec(model_id).vit_stem is None:
        return None
    return "unpadded" if layout == "open_clip" else "padded"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Export tests share the 2 cores with ONNX Runtime's threads (offline and a private home: tests/conftest.py)."""
    if importlib.util.find_spec("torch") is not None:  # the torch-free tests here (bundle writer, CLI) run without it
        import torch

        torch.set_num_threads(1)


def save_state_dict(sd: dict, path: Path) -> Path:
    """Write `sd` as users receive it: torch.save for .pt/.bin, safetensors for .safetensors."""
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        import torch

        torch.save(sd, str(path))
    return path


class FixtureFiles:
    """Checkpoint files and fp32 bundles made from the reference fixtures, built once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ckpt: dict[str, Path] = {}
        self._bundles: dict[str, Path] = {}

    def checkpoint(self, stem: str) -> Path:
        if stem not in self._ckpt:
            fx = load_fixture(stem)
            _, layout = FIXTURES[stem]
            suffix = ".pt" if layout == "ml-mobileclip" else OPEN_CLIP_SUFFIX[fx["model"]]
            self._ckpt[stem] = save_state_dict(fixture_state_dict(fx), self.root / f"{stem}{suffix}")
        return self._ckpt[stem]

    def bundle(self, stem: str) -> Path:
        if stem not in self._bundles:
            from export.api import export_bundle

            model_id, _ = FIXTURES[stem]
            self._bundles[stem] = export_bundle(model_id, self.root / f"bundle-{stem}", checkpoint=self.checkpoint(stem),
                                                vit_stem=fixture_stem(stem))
        return self._bundles[stem]


@pytest.fixture(scope="session")
def fixture_files(tmp_path_factory) -> FixtureFiles:
    return FixtureFiles(tmp_path_factory.mktemp("export_fixtures"))


@pytest.fixture(scope="session")
def s0_checkpoint(fixture_files) -> Path:
    """Apple-layout MobileCLIP-S0 checkpoint (.pt) filled by the reference weight rule."""
    return fixture_files.checkpoint(S0_STEM)


@pytest.fixture(scope="session")
def s0_bundle(fixture_files) -> Path:
    """fp32, dynamic-batch MobileCLIP-S0 bundle exported from `s0_checkpoint` (for integration tests)."""
    return fixture_files.bundle(S0_STEM)
