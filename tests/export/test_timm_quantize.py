"""`python -m quantize.int8` on image-only bundles (Apple's timm releases export to them), calibrated on plain images.

An image folder without captions is enough: nothing is tokenized, and the report has no retrieval or zero-shot part.
CI runs it on a tiny image-only bundle (seconds). The real S0 timm tower takes minutes, because of the search
and the same-run latency ratios, so it is marked slow (`make test-slow`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.image_parity import write_image_files
from tests.runtime.tiny_bundle import make_tiny_bundle


def _quantize(bundle: Path, model: str, calib: Path, out: Path, capsys) -> tuple[dict, float]:
    from quantize.int8 import main

    capsys.readouterr()
    started = time.perf_counter()
    code = main(["--model", model, "--bundle", str(bundle), "--calibration", str(calib), "--samples", "4",
                 "--eval-samples", "4", "--search-samples", "2", "--out", str(out), "--quiet", "--json"])
    seconds = time.perf_counter() - started
    assert code == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)["report"], seconds


def _check_int8_bundle(out: Path, report: dict, model_id: str, calib: Path) -> None:
    from edgeclip import Encoder
    from edgeclip.bundle import load_bundle

    assert list(report["towers"]) == ["image"] and report["retrieval"] is None and report["zero_shot"] is None
    assert report["calibration"]["images"] == 4 and report["calibration"]["captions"] == 0
    assert report["eval"]["images"] == 4
    bundle = load_bundle(out)  # every file, report.json and report.md included, against its sha256
    assert bundle.model_id == model_id and list(bundle.towers) == ["image"] and bundle.manifest["tokenizer"] is None
    assert bundle.manifest["quantization"]["report"] == "report.json"
    assert (out / "report.md").read_text().startswith("# INT8 report")
    assert Encoder(bundle, threads=1).encode_image([calib / "drawn_scene.png"]).shape[0] == 1


def test_image_only_bundle_quantizes_on_a_folder_without_captions(tmp_path, capsys):
    bundle = make_tiny_bundle(tmp_path / "fp32", towers=("image",), image_size=32, embed_dim=16)
    calib = tmp_path / "calib"
    write_image_files(calib)
    report, _ = _quantize(bundle, "tiny-test", calib, tmp_path / "int8", capsys)
    _check_int8_bundle(tmp_path / "int8", report, "tiny-test", calib)


@pytest.mark.slow
def test_s0_timm_bundle_quantizes(tmp_path, capsys):
    pytest.importorskip("torch", reason="the export side needs torch")
    from export.api import export_bundle
    from tests.export.test_timm_image_only import write_release

    ckpt = write_release("mobileclip-s0-timm", tmp_path / "mobileclip_s0_timm", "model.safetensors")
    bundle = export_bundle("s0", tmp_path / "fp32", checkpoint=ckpt)
    calib = tmp_path / "calib"
    write_image_files(calib)
    report, seconds = _quantize(bundle, "s0-timm", calib, tmp_path / "int8", capsys)
    _check_int8_bundle(tmp_path / "int8", report, "mobileclip-s0-timm", calib)
    with capsys.disabled():
        image = report["towers"]["image"]
        print(f"\n[timing] s0-timm INT8 of the image-only bundle: {seconds:.1f} s wall; {image['precision']}, "
              f"mean cos {image['fidelity']['mean_cos']:.4f}, centered {image['fidelity']['centered_mean_cos']:.4f}")
