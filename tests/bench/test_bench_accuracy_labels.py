"""The report says what each top-1 measures (zero-shot or image→caption retrieval) and what cosines on generated
inputs mean, in the table, the notes and the plot axis."""
from __future__ import annotations

from runtime.bench_report import GENERATED, GENERATED_NOTE, TASK_NOTES, plot_points, render_markdown, task_label


def _rows(task, evaluation: str) -> list[dict]:
    common = {"model": "m", "engine": "onnxruntime", "provider": "CPUExecutionProvider", "status": "ok", "eval": evaluation}
    accuracy = [{**common, "kind": "accuracy", "label": label, "variant": label.split()[-1], "top1": top1,
                 "image_centered_cos_mean": cos, **({"task": task, "n_labels": 400} if task else {})}
                for label, top1, cos in (("ort fp32", 0.5, None), ("edgeclip int8-cpu", 0.48, 0.9))]
    latency = [{**common, "kind": "latency", "label": r["label"], "variant": r["variant"], "tower": tower, "batch": 1,
                "median_ms": 2.0, "p90_ms": 2.5} for r in accuracy for tower in ("image", "text")]
    return accuracy + latency


def _md(rows: list[dict]) -> str:
    machine = {"platform": "p", "machine": "x86_64", "cpu_count": 2, "python": "3", "onnxruntime": "1",
               "available_providers": ["CPUExecutionProvider"]}
    return render_markdown({"schema": "edgeclip-bench/1", "created_utc": "now", "command": "x", "config": {"plan": {}},
                            "machine": machine, "notes": [], "rows": rows, "ratios": []})


def test_shard_rows_are_labelled_retrieval_not_zero_shot():
    md = _md(_rows("retrieval", "eval-000000.tar"))
    assert "image→caption retrieval top-1 (400 captions)" in md and TASK_NOTES["retrieval"] in md
    assert "zero-shot top-1" not in md and TASK_NOTES["zero-shot"] not in md
    assert {p["task"] for p in plot_points(_rows("retrieval", "x.tar"))} == {"retrieval"}


def test_folder_rows_are_labelled_zero_shot():
    row = {"task": "zero-shot", "n_labels": 48}
    assert task_label(row) == "zero-shot top-1 (48 classes)"
    md = _md(_rows("zero-shot", "classes/"))
    assert TASK_NOTES["zero-shot"] in md and "retrieval" not in md


def test_cosines_on_generated_inputs_come_with_what_they_mean():
    md = _md(_rows(None, GENERATED))
    assert GENERATED_NOTE in md
    assert GENERATED_NOTE not in _md(_rows("zero-shot", "classes/"))
