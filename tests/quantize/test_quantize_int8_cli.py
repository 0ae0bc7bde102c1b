"""`python -m quantize.int8` end to end: real bundles in, a verified INT8 bundle and report out."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from quantize_fixtures import png_bytes

ROOT = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = ROOT / "export" / "weights" / "demo.safetensors"

# Runs the CLI in-process and reports whether torch was imported on the way.
WRAPPER = """
import json, sys
from quantize.int8 import main
code = main(sys.argv[1:])
print("@@" + json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _cli(args: list[str], timeout: int = 300) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    tail = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    return proc, (json.loads(tail[-1][2:]) if tail else {})


def _bad_shard(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, payload in (("bad1.jpg", b"not an image"), ("bad1.paug.json", b'{"param_aug": [[[0,0,1,1],null]]}'),
                              ("bad2.png", png_bytes(np.zeros((8, 8, 3), np.uint8))), ("bad2.paug.json", b"{")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_int8_cli_end_to_end_from_a_bundle_without_torch(tiny_bundle, tiny_shards, tmp_path):
    from edgeclip import Encoder, load_bundle

    out = tmp_path / "int8"
    proc, info = _cli(["--model", "tiny-test", "--bundle", str(tiny_bundle),
                       "--calibration", str(_bad_shard(tmp_path / "bad.tar")), str(tiny_shards / "calib"),
                       "--eval", str(tiny_shards / "eval"), "--samples", "24", "--eval-samples", "8",
                       "--search-samples", "4", "--out", str(out), "--json", "--quiet"])
    assert proc.returncode == 0 and info == {"code": 0, "torch": False}, proc.stderr[-3000:]
    bundle = load_bundle(out, verify=True)
    q = bundle.manifest["quantization"]
    assert q["target"] == "cpu" and q["activations"] == "U8" and q["weights"] == "S8" and q["per_channel"]
    assert q["calibration"]["count"] == 24 and q["calibration"]["skipped"] == 2 and q["report"] == "report.json"
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# INT8 report")
    assert report["calibration"]["skip_reasons"] == {"undecodable image": 1, "bad JSON in paug.json": 1}
    assert report["eval"]["images"] == 8
    for name in ("image", "text"):
        tower = report["towers"][name]
        assert bundle.manifest["towers"][name]["precision"] == tower["precision"]
        assert q["kept_float"][name] == [k["node"] for k in tower["kept_float"]]
        assert tower["curve"], "every tower reports the recipes it tried"
        if tower["precision"] == "int8":
            goals = report["goals"]
            chosen = tower["curve"][-1] if not tower["kept_float"] else None
            assert tower["fidelity"]["n"] >= 8 and tower["latency"]["fp32_ms"] > 0
            assert chosen is None or chosen["metrics"]["mean_cos"] >= goals["min_cos"]
        else:
            assert tower["reason"]
    assert set(report["retrieval"]) == {"fp32", "int8"} and set(report["teacher_top5_overlap"]) == {"fp32", "int8"}
    enc = Encoder(out, providers="cpu")
    img = enc.encode_image([np.zeros((40, 40, 3), np.uint8)])
    txt = enc.encode_text(["a red circle"])
    assert img.shape == txt.shape == (1, 16)


def test_int8_cli_usage_and_input_errors(tiny_bundle, tiny_shards, tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "quantize.int8", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60).stdout
    for option in ("--model", "--checkpoint", "--bundle", "--calibration", "--samples", "--target", "--out", "--json",
                   "--method", "--bins", "--min-cosine", "--min-speedup", "--rand-augment", "--vit-stem"):
        assert option in help_text
    usage = subprocess.run([sys.executable, "-m", "quantize.int8", "--target", "tpu", "--model", "s0"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2
    proc, info = _cli(["--model", "tiny-test", "--bundle", str(tiny_bundle), "--calibration", str(tmp_path / "nope"),
                       "--out", str(tmp_path / "o"), "--quiet"])
    assert info["code"] == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc, info = _cli(["--model", "tiny-test", "--bundle", str(tiny_bundle), "--calibration", str(tiny_shards),
                       "--target", "nnapi", "--out", str(tmp_path / "o"), "--quiet"])
    assert info["code"] == 1 and "fixed-shape" in proc.stderr
    proc, info = _cli(["--model", "tiny-test", "--bundle", str(tiny_bundle), "--calibration", str(tiny_shards),
                       "--vit-stem", "padded", "--out", str(tmp_path / "o"), "--quiet"])
    assert info["code"] == 1 and "--vit-stem" in proc.stderr
    assert not (tmp_path / "o").exists(), "a failed run leaves no bundle"


@pytest.mark.skipif(not DEMO_WEIGHTS.is_file(), reason="the demo model's weights (export/weights/demo.safetensors) "
                                                       "are not in this checkout yet")
def test_int8_cli_demo_model_reports_zero_shot(tmp_path):
    pytest.importorskip("torch", reason="--model demo exports the fp32 bundle first, which needs torch")
    out = tmp_path / "demo-int8"
    # no speed guard: the demo's 1 ms towers gain nothing from INT8, and on a busy machine the guard would keep a
    # tower float at random; this test is about the report and how the INT8 text tower stores its table
    proc, info = _cli(["--model", "demo", "--samples", "48", "--eval-samples", "32", "--search-samples", "8",
                       "--min-speedup", "0", "--out", str(out), "--json", "--quiet"], timeout=600)
    assert proc.returncode == 0 and info["code"] == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    zs = report["zero_shot"]
    assert 0.0 <= zs["int8"] <= 1.0 and zs["images"] > 0
    assert report["model_id"] == "demo"
    import onnx  # the trained demo model keeps its token table INT8 per row; no float copy of it is stored
    from onnx import numpy_helper

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"]["token_tables"] == {"text": "int8"}
    text = onnx.load(str(out / manifest["towers"]["text"]["file"]))
    tables = {t.name: numpy_helper.to_array(t) for t in text.graph.initializer if t.dims and t.dims[0] == 49408}
    assert {a.dtype for a in tables.values() if a.ndim == 2 and a.shape[1] > 1} == {np.dtype(np.int8)}
