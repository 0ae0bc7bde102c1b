"""README command 1 end to end at a small size: export → INT8 (cpu) → zero-shot, cosine and latency table."""

import json
import shlex

import pytest

pytest.importorskip("torch", reason="the demo pipeline exports from the PyTorch checkpoint")

from benchmarks.demo_pipeline import main  # noqa: E402
from edgeclip.cli import main as cli_main  # noqa: E402


def test_demo_pipeline_writes_the_table_and_ends_with_a_command_that_works(tmp_path, capsys):
    """The table, ONNX equal to torch, INT8 close to both; the last lines name every bundle folder and one
    `edgeclip classify` command, and that command works as printed."""
    out = tmp_path / "demo"
    args = ["--out", str(out), "--targets", "cpu,xnnpack", "--samples", "32", "--repeats", "2", "--threads", "1"]
    assert main(args) == 0  # xnnpack quantizes batch-1 graphs, cpu the dynamic ones: both sources are exported
    printed = capsys.readouterr().out
    assert "| fp32 torch |" in printed and "| INT8 cpu (run on cpu EP) |" in printed
    report = json.loads((out / "report.json").read_text())
    torch_row, onnx_row, *int8_rows = report["rows"]
    assert [r["name"] for r in int8_rows] == ["INT8 cpu (run on cpu EP)", "INT8 xnnpack (run on cpu EP)"]
    assert report["eval_images"] == 400 and report["classes"] == 48
    assert abs(onnx_row["zero_shot_top1"] - torch_row["zero_shot_top1"]) <= 0.25  # at most one image flips
    assert onnx_row["image_cos"] > 0.9999 and onnx_row["text_cos"] > 0.9999
    for int8_row in int8_rows:
        assert int8_row["int8_towers"] == "image+text"  # the speed guard is off: both towers really INT8
        assert int8_row["image_cos"] > 0.99 and int8_row["text_cos"] > 0.99
    assert (out / "report.md").read_text().startswith("| model |")
    assert (out / "int8-cpu" / "report.json").is_file() and (out / "int8-xnnpack" / "report.json").is_file()

    lines = printed.strip().splitlines()
    for name in ("fp32", "int8-cpu", "int8-xnnpack"):
        assert any(line.split() == [name, str(out / name)] for line in lines), f"{name} bundle not listed"
    command = shlex.split(lines[-1])
    assert command[:3] == ["edgeclip", "classify", str(out / "int8-cpu")]
    assert cli_main(command[1:] + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    example = report["example"]
    assert [r["image"] for r in result["results"]] == [example["image"]]
    assert sorted(item["label"] for item in result["results"][0]["labels"]) == example["labels"]
