"""README command 1 end to end at a small size: export → INT8 (cpu) → zero-shot, cosine and latency table."""

import json

import pytest

pytest.importorskip("torch", reason="the demo pipeline exports from the PyTorch checkpoint")

from benchmarks.demo_pipeline import main  # noqa: E402


def test_demo_pipeline_writes_the_table_and_keeps_onnx_equal_to_torch(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--targets", "cpu", "--samples", "32", "--repeats", "2", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| fp32 torch |" in printed and "| INT8 cpu (run on cpu EP) |" in printed
    report = json.loads((out / "report.json").read_text())
    torch_row, onnx_row, int8_row = report["rows"]
    assert report["eval_images"] == 400 and report["classes"] == 48
    assert abs(onnx_row["zero_shot_top1"] - torch_row["zero_shot_top1"]) <= 0.25  # at most one image flips
    assert onnx_row["image_cos"] > 0.9999 and onnx_row["text_cos"] > 0.9999
    assert int8_row["int8_towers"] == "image+text"  # the speed guard is off: both towers really INT8
    assert int8_row["image_cos"] > 0.99 and int8_row["text_cos"] > 0.99
    assert (out / "report.md").read_text().startswith("| model |")
    assert (out / "int8-cpu" / "report.json").is_file()
