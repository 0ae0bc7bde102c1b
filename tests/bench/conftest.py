"""Tiny bundles for the benchmark tests: fp32 (dynamic and fixed batch), INT8 static QDQ and quantize_dynamic.

The INT8 ones are made with onnxruntime's real quantizer from the tiny fp32 graphs of tests/runtime/tiny_bundle.py.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from tiny_bundle import make_tiny_bundle  # noqa: E402

from edgeclip.bundle import MANIFEST_NAME, sha256_file  # noqa: E402
from runtime.bench_runners import image_batch, token_batch  # noqa: E402


class _Reader:
    """Calibration batches for onnxruntime's quantize_static."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self.items = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.items, None)


def requantize(src: Path, out: Path, method: str) -> Path:
    """Copy a tiny fp32 bundle with both towers quantized: method "static" (QDQ, cpu target) or "dynamic"."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    shutil.copytree(src, out)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    for tower, spec in manifest["towers"].items():
        path = out / spec["file"]
        tmp = path.with_suffix(".q.onnx")
        if method == "dynamic":
            quantize_dynamic(str(path), str(tmp))
        else:
            size = manifest["preprocess"]["size"]
            batches = [image_batch(size, 1, s) if tower == "image" else token_batch(77, 1, s) for s in range(4)]
            quantize_static(str(path), str(tmp), _Reader(spec["inputs"][0]["name"], batches),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        tmp.replace(path)
        spec["precision"] = "int8"
        spec["sha256"] = sha256_file(path)
    manifest["quantization"] = {"target": "cpu", "method": method, "calibration": None}
    (out / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """fp32, fp32 with fixed batch 4 (same weights), int8 static, int8 dynamic."""
    root = tmp_path_factory.mktemp("bench_bundles")
    fp32 = make_tiny_bundle(root / "fp32", image_size=32)
    return {
        "fp32": fp32,
        "fixed": make_tiny_bundle(root / "fixed", image_size=32, batch=4),
        "int8": requantize(fp32, root / "int8", "static"),
        "dynamic": requantize(fp32, root / "dynamic", "dynamic"),
    }


@pytest.fixture(scope="session")
def eval_folder(tmp_path_factory) -> Path:
    """An ImageNet-style folder: three classes with images, one empty class, and a prompts.json."""
    from PIL import Image

    root = tmp_path_factory.mktemp("bench_eval")
    rng = np.random.default_rng(0)
    for c in ("red_car", "blue_sky", "cat", "empty_class"):
        (root / c).mkdir()
        for i in range(0 if c == "empty_class" else 3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    (root / "prompts.json").write_text(json.dumps({"templates": ["a photo of a {}.", "a {}."],
                                                   "classes": {"cat": ["a photo of a cat", "a kitten"]}}))
    return root
