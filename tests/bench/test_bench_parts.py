"""Unit tests of the benchmark's parts: evaluation data, metrics, per-process timing, provider plan, report files."""
from __future__ import annotations

import io
import json
import sys
import tarfile
import time

import numpy as np
import pytest

from runtime.bench_accuracy import EvalDataError, class_embeddings, cosine_stats, load_eval_set, top1
from runtime.bench_report import render_markdown, write_report
from runtime.bench_runners import provider_plan, variant_of
from runtime.bench_timing import TimingPlan, alternate, time_calls
from runtime.bench_timing import run_child


def test_class_folder_labels_prompts_and_limit(eval_folder):
    es = load_eval_set(eval_folder)
    assert es.kind == "zero-shot" and len(es.prompts) == 4  # the empty class still is a label
    names = sorted(p.name for p in eval_folder.iterdir() if p.is_dir())
    assert es.prompts[names.index("cat")] == ["a photo of a cat", "a kitten"]
    assert es.prompts[names.index("red_car")] == ["a photo of a red car.", "a red car."]
    assert len(es.images) == 9 and all(es.images[i].parent.name == names[es.labels[i]] for i in range(9))
    with_images = {names.index(c) for c in ("blue_sky", "cat", "red_car")}
    assert set(load_eval_set(eval_folder, limit=3).labels) == with_images  # round-robin keeps every class


def test_folder_without_classes_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(EvalDataError, match="two class subfolders"):
        load_eval_set(tmp_path)
    with pytest.raises(EvalDataError, match="not found"):
        load_eval_set(tmp_path / "nope")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_reinforced_shards_become_a_retrieval_set(tmp_path):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for i in range(3):
            _add(tar, f"s{i}.jpg", buf.getvalue())
            _add(tar, f"s{i}.txt", f"caption {i}".encode())
            _add(tar, f"s{i}.syn.json", b'{"syn_text": []}')
        _add(tar, "lonely.jpg", buf.getvalue())  # no caption: not usable
    es = load_eval_set(tmp_path)
    assert es.kind == "retrieval" and list(es.labels) == [0, 1, 2]
    assert [p[0] for p in es.prompts] == ["caption 0", "caption 1", "caption 2"]


def test_top1_and_cosines_are_exact_on_known_embeddings():
    rng = np.random.default_rng(0)
    text = rng.standard_normal((6, 16))
    prompts = [["a", "b"], ["c"], ["d", "e", "f"]]
    classes = class_embeddings(text, prompts)
    labels = np.array([2, 0, 1, 2])
    assert top1(classes[labels] * 3.0, classes, labels) == 1.0
    assert top1(classes[(labels + 1) % 3], classes, labels) == 0.0
    x = rng.standard_normal((5, 16))
    stats = cosine_stats(x, 2 * x)
    assert stats["cos_mean"] == pytest.approx(1.0) and stats["centered_cos_mean"] == pytest.approx(1.0)
    assert cosine_stats(x, -x)["cos_mean"] == pytest.approx(-1.0)


def test_alternate_rotates_the_order_and_keeps_going_when_a_child_crashes():
    order = []

    def run_one(job):
        order.append(job)
        if job == "b":
            raise RuntimeError("the process was killed by SIGSEGV")
        return {"ok": job}

    results = alternate({"a": "a", "b": "b", "c": "c"}, run_one, processes=3)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert results["a"] == [{"ok": "a"}] * 3
    assert results["b"] == [{"crashed": "RuntimeError: the process was killed by SIGSEGV"}] * 3


def test_time_calls_warms_up_then_times_and_respects_the_budget():
    calls = []
    times = time_calls(lambda: calls.append(1), TimingPlan(warmup=2, runs=4, min_runs=1, processes=1, budget_s=60))
    assert len(times) == 4 and len(calls) == 6 and all(t >= 0 for t in times)
    slow = time_calls(lambda: time.sleep(0.02), TimingPlan(warmup=0, runs=50, min_runs=2, processes=1, budget_s=0.01))
    assert len(slow) == 2  # the budget ends the run once min_runs are in


def test_run_child_names_the_signal_that_killed_it(tmp_path, monkeypatch):
    (tmp_path / "crashing_child.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    (tmp_path / "failing_child.py").write_text("import sys\nsys.exit('cannot open the bundle')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="killed by SIGSEGV"):
        run_child("crashing_child", [])
    with pytest.raises(RuntimeError, match="cannot open the bundle"):
        run_child("failing_child", [])


def test_provider_plan_records_absent_providers():
    run, skipped = provider_plan(None, ["AzureExecutionProvider", "CPUExecutionProvider"])
    assert run == ["CPUExecutionProvider"]
    assert set(skipped) == {"AzureExecutionProvider", "XnnpackExecutionProvider", "NnapiExecutionProvider"}
    run, skipped = provider_plan(["cpu", "xnnpack"], ["CPUExecutionProvider", "XnnpackExecutionProvider"])
    assert run == ["CPUExecutionProvider", "XnnpackExecutionProvider"] and not skipped
    with pytest.raises(ValueError, match="unknown execution provider"):
        provider_plan(["warp"], ["CPUExecutionProvider"])


def _report() -> dict:
    row = {"kind": "latency", "model": "m", "engine": "onnxruntime", "variant": "fp32", "provider": "CPUExecutionProvider",
           "label": "ort fp32", "bundle": "b", "tower": "image", "batch": 1, "status": "ok", "median_ms": 2.0,
           "p90_ms": 3.0, "mean_ms": 2.0, "min_ms": 1.0, "n": 3, "per_item_ms": 2.0}
    return {"schema": "edgeclip-bench/1", "created_utc": "now", "command": "x", "config": {"plan": {}},
            "machine": {"platform": "p", "machine": "x86_64", "cpu_count": 2, "python": "3", "onnxruntime": "1",
                        "available_providers": ["CPUExecutionProvider"]},
            "notes": [], "rows": [row], "ratios": []}


def test_report_without_matplotlib_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = write_report(_report(), tmp_path)
    assert sorted(p.name for p in written) == ["report.json", "report.md"] and not (tmp_path / "report.png").exists()
    assert "matplotlib is not installed" in json.loads((tmp_path / "report.json").read_text())["notes"][0]
    assert "| m | ort fp32 | CPU | image | 1 | 2.00 | 3.00 |" in render_markdown(_report())


def test_report_rerenders_from_its_json(tmp_path):
    from runtime.bench_report import main

    write_report(_report(), tmp_path / "a", plot=False)
    assert main([str(tmp_path / "a" / "report.json"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "report.md").read_text() == (tmp_path / "a" / "report.md").read_text()
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main([str(tmp_path / "bad.json")]) == 1


def test_reports_of_different_models_merge_and_the_same_model_twice_is_refused(tmp_path):
    from runtime.bench_report import main

    other = _report()
    other["rows"] = [{**row, "model": "n"} for row in other["rows"]]
    write_report(_report(), tmp_path / "m", plot=False)
    write_report(other, tmp_path / "n", plot=False)
    jsons = [str(tmp_path / d / "report.json") for d in ("m", "n")]
    assert main([*jsons, "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "report.json").read_text())
    assert sorted(r["model"] for r in merged["rows"]) == ["m", "n"] and "merged from 2 runs" in merged["notes"][-1]
    assert main([jsons[0], jsons[0], "--out", str(tmp_path / "twice")]) == 1
    with pytest.raises(SystemExit):
        main(jsons)  # merging needs --out


def test_variant_names_a_guard_kept_int8_bundle_by_its_target():
    towers = {"image": {"precision": "fp32"}, "text": {"precision": "int8"}}
    assert variant_of({"towers": towers, "quantization": {"target": "xnnpack", "method": "MinMax"}}) == "int8-xnnpack"
    kept = {"image": {"precision": "fp32"}, "text": {"precision": "fp32"}}
    assert variant_of({"towers": kept, "quantization": {"target": "cpu", "method": "MinMax"}}) == "int8-cpu"
    assert variant_of({"towers": kept, "quantization": None}) == "fp32"
    assert variant_of({"towers": towers, "quantization": {"target": "cpu", "method": "dynamic: quantize_dynamic"}}) \
        == "int8-dynamic"


def test_a_runner_whose_process_crashes_is_an_error_row_and_the_run_goes_on(tiny_bundles, tmp_path, monkeypatch):
    from runtime.bench import BenchConfig, latency_rows
    from runtime.bench_runners import Runner, bundle_runners
    from runtime.bench_timing import QUICK

    (tmp_path / "segv_runner.py").write_text(
        "import os, signal, sys\n"
        "from runtime.bench_runners import Runner\n"
        "from runtime.bench_worker import main\n"
        "def make():\n"
        "    def open_tower():\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)  # what a provider bug looks like from outside\n"
        "    return Runner('crash', 'onnxruntime', 'fp32', 'CPUExecutionProvider', {'image': open_tower}, 32)\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(main({'segv': make}))\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    crash = Runner("crash", "onnxruntime", "fp32", "CPUExecutionProvider", {"image": lambda: None}, 32,
                   recipe={"factory": "segv", "worker": "segv_runner", "kwargs": {}})
    good = bundle_runners(tiny_bundles["fp32"], ["CPUExecutionProvider"], 1)[0]
    rows = latency_rows([crash, good], BenchConfig(towers=("image",), batches=(1,), plan=QUICK), progress=False)
    by_model = {r["model"]: r for r in rows}
    assert by_model["crash"]["status"] == "error" and "SIGSEGV" in by_model["crash"]["reason"]
    assert by_model[good.model_id]["status"] == "ok" and by_model[good.model_id]["n"] == QUICK.runs
