"""The `edgeclip` command, run as `python3 -m edgeclip` in a subprocess on a tiny bundle."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeclip import Encoder
from edgeclip.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, check_rc: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "edgeclip", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == check_rc, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(10):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_help_explains_commands():
    out = cli("--help").stdout
    for word in ("info", "embed", "classify", "doctor", "--providers", "--threads", "--json", "exit codes"):
        assert word in out
    assert "--labels" in cli("classify", "--help").stdout


def test_info_text_and_json(bundles):
    assert "tiny-test" in cli("info", bundles["dynamic"]).stdout
    info = json.loads(cli("--json", "info", bundles["dynamic"]).stdout)
    assert info["verified"] and info["embed_dim"] == 16 and set(info["towers"]) == {"image", "text"}
    assert info["towers"]["image"]["providers"][-1] == "cpu"


def test_embed_writes_npy_matching_the_api(bundles, images, tmp_path):
    out = tmp_path / "emb.npy"
    proc = cli("embed", bundles["dynamic"], *images, "--text", "a cat", "--text", "a dog", "--out", out,
               "--batch-size", "3", "--threads", "1")
    assert "wrote 12 x 16" in proc.stdout
    emb = np.load(out)
    enc = Encoder(bundles["dynamic"], providers="cpu", threads=1)
    np.testing.assert_allclose(emb[:10], enc.encode_image(images), atol=1e-6)
    np.testing.assert_allclose(emb[10:], enc.encode_text(["a cat", "a dog"]), atol=1e-6)
    assert "embedding" in proc.stderr  # tqdm progress bar for many files
    assert [p.name for p in tmp_path.iterdir()] == ["emb.npy"]  # no temp file left behind


def test_embed_json_parses(bundles, images):
    result = json.loads(cli("embed", bundles["dynamic"], images[0], "--text", "hi", "--json").stdout)
    assert result["shape"] == [2, 16] and [r["kind"] for r in result["rows"]] == ["image", "text"]
    assert np.allclose(np.linalg.norm(np.array(result["embeddings"]), axis=1), 1.0, atol=1e-5)


def test_classify_text_and_json(bundles, images):
    out = cli("classify", bundles["dynamic"], images[0], "--labels", "cat,dog,car").stdout
    assert out.splitlines()[0].endswith("img0.png") and "cat" in out
    result = json.loads(cli("--json", "classify", bundles["dynamic"], *images[:2], "--labels", "cat,dog,car",
                            "--templates", "a photo of a {}.", "a {}", "--top-k", "3").stdout)
    assert len(result["results"]) == 2
    for r in result["results"]:
        assert sorted(x["label"] for x in r["labels"]) == ["car", "cat", "dog"]
        assert abs(sum(x["probability"] for x in r["labels"]) - 1.0) < 1e-5


@pytest.mark.parametrize("args, message", [
    (["info", "/nonexistent/bundle"], "bundle directory not found"),
    (["embed", "{dynamic}", "{tmp}/missing.jpg"], "image file not found"),
    (["--providers", "nnapi,xnnpack", "embed", "{dynamic}", "--text", "x"], "not available in this onnxruntime build"),
    (["classify", "{dynamic}", "{img}", "--labels", "cat,,dog"], "empty name"),
    (["embed", "{image_only}", "--text", "x"], "no text tower"),
    (["embed", "{dynamic}"], "nothing to embed"),
])
def test_errors_are_one_line_with_exit_code_1(bundles, images, tmp_path, capsys, args, message):
    args = [a.format(dynamic=bundles["dynamic"], image_only=bundles["image_only"], tmp=tmp_path, img=images[0]) for a in args]
    if "nnapi,xnnpack" in args:
        import onnxruntime as ort

        if {"NnapiExecutionProvider", "XnnpackExecutionProvider"} <= set(ort.get_available_providers()):
            pytest.skip("this onnxruntime build has NNAPI and XNNPACK, so they are not missing")
    assert main(args) == 1  # in-process (the same code path as the subprocess runs, without its start-up cost)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeclip: error:") and message in lines[0]


def test_one_line_error_in_a_real_process(bundles):
    proc = cli("--providers", "gpu-please", "embed", bundles["dynamic"], "--text", "x", check_rc=1)
    assert proc.stderr.strip().splitlines() == [
        "edgeclip: error: unknown provider 'gpu-please'; use 'auto', one of cpu, xnnpack, nnapi, or an ONNX Runtime provider name"]


@pytest.mark.parametrize("args", [["classify", "B", "x.png"], ["--threads", "0", "info", "B"], [], ["embed"]])
def test_usage_errors_exit_2(args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2


def test_doctor_reports_or_says_why_not(bundles):
    proc = subprocess.run([sys.executable, "-m", "edgeclip", "doctor", str(bundles["dynamic"])], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        assert proc.stdout.strip()
    else:
        assert proc.returncode == 1 and proc.stderr.startswith("edgeclip: error:")
