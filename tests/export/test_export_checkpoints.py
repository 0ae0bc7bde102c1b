"""Checkpoint resolution and the one clear error for wrong, truncated or foreign files (and no partial bundle)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the build side needs torch, timm and open_clip (pip install -e '.[export]')")

from export.checkpoint import (CheckpointError, cache_path, detect_layout, read_checkpoint, resolve_checkpoint,
                               unwrap_state_dict)
from export.registry import get_spec
from tests.export.conftest import save_state_dict
from tests.reference_fixtures import load_fixture

ROOT = Path(__file__).resolve().parents[2]


def _zeros_like_fixture(stem: str) -> dict:
    """A checkpoint with exactly a fixture's keys and shapes (values do not matter for key checks)."""
    return {k: torch.zeros(shape, dtype=torch.int64 if "int" in dt else torch.float32)
            for k, shape, dt in load_fixture(stem)["state_dict"]}


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")
            or p.name.startswith(".edgeclip-export-")]


def _export_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "export", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_s2_file_for_s0_names_model_counts_and_keys(tmp_path):
    ckpt = save_state_dict(_zeros_like_fixture("mobileclip-s2.ml-mobileclip"), tmp_path / "mobileclip_s2.pt")
    from export.api import build_model

    with pytest.raises(CheckpointError) as err:
        build_model("s0", ckpt)
    msg = str(err.value)
    assert "mobileclip_s2.pt" in msg and "mobileclip-s0" in msg and "ml-mobileclip" in msg
    assert "expected 893 tensors, file has 1721" in msg  # the two fixtures' key counts
    assert "first missing:" in msg and "first unexpected:" in msg and "mis-shaped" in msg


def test_cli_wrong_checkpoint_exit_1_and_no_partial_bundle(tmp_path):
    ckpt = save_state_dict(_zeros_like_fixture("MobileCLIP2-S0.open_clip"), tmp_path / "open_clip_model.safetensors")
    out = tmp_path / "bundle"
    res = _export_cli("--model", "s0", "--checkpoint", str(ckpt), "--out", str(out))
    assert res.returncode == 1, res.stderr
    assert "open_clip" in res.stderr and "mobileclip-s0 loads only: ml-mobileclip" in res.stderr
    assert "Traceback" not in res.stderr
    assert _leftovers(tmp_path, "bundle") == []


def test_truncated_checkpoint(tmp_path, s0_checkpoint):
    data = s0_checkpoint.read_bytes()
    cut = tmp_path / "mobileclip_s0.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint mobileclip_s0.pt .*truncated"):
        read_checkpoint(cut)
    st = tmp_path / "model.safetensors"
    save_state_dict({"visual.w": torch.ones(1000)}, st)
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint model.safetensors"):
        read_checkpoint(st)


def test_random_pt_and_non_state_dicts(tmp_path):
    from export.api import build_model

    rnd = save_state_dict({"foo.weight": torch.randn(3, 3), "bar": torch.randn(2)}, tmp_path / "random.pt")
    with pytest.raises(CheckpointError, match="keys match no known layout"):
        build_model("s0", rnd)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.randn(4), tensor)
    with pytest.raises(CheckpointError, match="is not a state_dict"):
        read_checkpoint(tensor)
    pickled = tmp_path / "object.pt"
    torch.save({"a": Path("x")}, pickled)  # weights_only refuses arbitrary objects
    with pytest.raises(CheckpointError, match="cannot read checkpoint object.pt"):
        read_checkpoint(pickled)
    with pytest.raises(CheckpointError, match="unsupported file type"):
        read_checkpoint(save_state_dict({"a": torch.ones(1)}, tmp_path / "w.pt").rename(tmp_path / "w.ckpt"))


def test_wrappers_and_prefix_are_unwrapped():
    sd = {"visual.a": torch.ones(1), "text.b": torch.ones(1)}
    assert unwrap_state_dict({"state_dict": sd, "epoch": 3}) == sd
    assert unwrap_state_dict({"model": {f"module.{k}": v for k, v in sd.items()}}) == sd
    assert detect_layout(sd) == "open_clip"
    assert detect_layout(["logit_scale", "image_encoder.x", "text_encoder.y"]) == "ml-mobileclip"


def test_resolution_uses_cache_then_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLIP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = get_spec("mobileclip2-s0")
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(spec)
    msg = str(err.value)
    first = spec.sources[0]
    assert f"https://huggingface.co/{first.repo}/resolve/main/{first.filename}" in msg
    assert str(cache_path(spec, first)) in msg and "--checkpoint" in msg
    target = cache_path(spec, spec.sources[1])  # any listed source file in the cache is found
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert resolve_checkpoint(spec) == target
