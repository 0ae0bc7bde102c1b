"""MobileCLIP-B (LT): registered under its own id, and its Apple file exports to Apple's network (padded stem).

CI cost is kept small: the image tower alone, input-sensitive random weights in Apple's layout written as the
release's `mobileclip_blt.pt`, a few image files, compared with the independent reference of Apple's ViT
(tests/apple/apple_vit_reference.py) on torchvision-preprocessed files.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.image_parity import assert_image_parity, describe, load_image_files, write_image_files

torch = pytest.importorskip("torch", reason="the export side needs torch")
pytest.importorskip("timm", reason="the export extra installs timm")

N_IMAGES = 4


def test_registry_lists_b_lt_and_the_timm_image_only_releases():
    from export.cli import list_models
    from export.registry import get_spec

    rows = {r["model_id"]: r for r in list_models()}
    b, blt = rows["mobileclip-b"], rows["mobileclip-b-lt"]
    assert {"b-lt", "blt"} <= set(blt["aliases"]) and get_spec("BLT").model_id == "mobileclip-b-lt"
    assert {s["repo"]: s["file"] for s in blt["sources"] if s["layout"] == "ml-mobileclip"} == \
        {"apple/MobileCLIP-B-LT": "mobileclip_blt.pt"}
    assert {s["repo"] for s in blt["sources"] if s["layout"] == "open_clip"} == {"apple/MobileCLIP-B-LT-OpenCLIP"}
    assert get_spec("b-lt").open_clip_name == get_spec("b").open_clip_name  # OpenCLIP: MobileCLIP-B, datacompdr_lt
    assert {k: blt[k] for k in ("image_size", "embed_dim", "towers")} == {k: b[k] for k in ("image_size", "embed_dim",
                                                                                            "towers")}
    timm_rows = {m: r for m, r in rows.items() if r["layouts"] == ["timm"]}
    assert {r["sources"][0]["repo"] for r in timm_rows.values()} == {
        f"apple/mobileclip_{n}_timm" for n in ("s0", "s1", "s2", "b", "b_lt")}
    assert all(r["towers"] == ["image"] for r in timm_rows.values())


def test_b_lt_apple_file_exports_apples_network(tmp_path, capsys):
    from edgeclip import Encoder
    from export.cli import main
    from export.random_init import input_sensitive_state_dict
    from tests.apple.apple_vit_reference import apple_vit_encode_image

    sd = input_sensitive_state_dict("b-lt", layout="ml-mobileclip", image_only=True)
    ckpt = tmp_path / "mobileclip_blt.pt"
    torch.save(sd, ckpt)
    started = time.perf_counter()
    assert main(["--model", "blt", "--checkpoint", str(ckpt), "--towers", "image", "--out", str(tmp_path / "b")]) == 0
    seconds = time.perf_counter() - started
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model_id"] == "mobileclip-b-lt" and list(manifest["towers"]) == ["image"]
    assert manifest["source_checkpoint"]["layout"] == "ml-mobileclip" and manifest["image_stem"] == "padded"

    images = write_image_files(tmp_path / "images", limit=N_IMAGES)
    enc = Encoder(tmp_path / "b", providers="cpu", threads=2, preprocess_mode="exact")  # torchvision's pixels
    ours = enc.encode_image([str(p) for p in images])
    ref = apple_vit_encode_image(sd, torch.from_numpy(load_image_files(images, 224))).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    figures = assert_image_parity(ours, ref, "mobileclip-b-lt bundle vs Apple's ViT")
    with capsys.disabled():
        print(f"\n{describe(f'mobileclip-b-lt (mobileclip_blt.pt) bundle vs Apple ViT, {len(images)} files', figures)}"
              f"; image-tower export {seconds:.1f} s")
