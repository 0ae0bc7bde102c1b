"""Smoke test of `python -m runtime.bench` at a tiny size: it runs, and its JSON, markdown and PNG are sound."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OTHER_PROVIDERS = ("XnnpackExecutionProvider", "NnapiExecutionProvider")


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.bench", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_run(tiny_bundles, eval_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_report")
    baseline = out.parent / "torch_rows.json"
    baseline.write_text(json.dumps([
        {"kind": "latency", "model": "tiny-test", "engine": "torch", "variant": "fp32", "provider": "torch-cpu",
         "label": "torch fp32", "tower": t, "batch": 1, "status": "ok", "median_ms": 5.0, "p90_ms": 6.0}
        for t in ("image", "text")]))
    photo = out.parent / "photo.jpg"  # small, to keep decode time out of the CI budget
    Image.effect_mandelbrot((160, 120), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(photo)
    bundles = {k: v for k, v in tiny_bundles.items() if k != "fixed"}
    proc = bench("--bundle", *bundles.values(), "--report", out, "--quick", "--eval-dir", eval_folder,
                 "--baseline-rows", baseline, "--image", photo, "--json", "--no-progress")
    return proc, out, bundles


def test_exits_zero_and_prints_the_report_json(cli_run):
    proc, out, _ = cli_run
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads((out / "report.json").read_text())
    assert "skipped provider XnnpackExecutionProvider" in proc.stderr


def test_latency_rows_cover_every_bundle_tower_and_batch(cli_run):
    _, out, bundles = cli_run
    rows = json.loads((out / "report.json").read_text())["rows"]
    ok = {(r["bundle"], r["tower"], r["batch"]) for r in rows if r["kind"] == "latency" and r["status"] == "ok"
          and r["provider"] == "CPUExecutionProvider"}
    assert ok == {(str(b), t, n) for b in bundles.values() for t in ("image", "text") for n in (1, 8)}
    for r in rows:
        if r["kind"] == "latency" and r["status"] == "ok" and "measured_in" not in r:
            assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"]
    skipped = [r for r in rows if r["status"] == "skipped" and r["provider"] in OTHER_PROVIDERS]
    assert {(r["provider"], r["tower"]) for r in skipped} == {(p, t) for p in OTHER_PROVIDERS for t in ("image", "text")}
    assert all("not in this onnxruntime build" in r["reason"] for r in skipped)


def test_end_to_end_cold_start_and_memory_rows(cli_run):
    _, out, bundles = cli_run
    rows = json.loads((out / "report.json").read_text())["rows"]
    e2e = [r for r in rows if r["kind"] == "end_to_end"]
    assert len(e2e) == len(bundles) and all(r["status"] == "ok" for r in e2e)
    assert all(0 < r["decode_ms"] < r["decode_preprocess_ms"] for r in e2e)
    cold = [r for r in rows if r["kind"] == "cold_start"]
    assert all(r["cold_start_s"] >= r["import_s"] + r["session_s"] for r in cold) and len(cold) == len(bundles)
    mem = [r for r in rows if r["kind"] == "memory"]
    assert all(r["peak_rss_mb"] >= r["rss_after_import_mb"] > 0 for r in mem) and len(mem) == len(bundles)


def test_accuracy_rows(cli_run):
    _, out, bundles = cli_run
    acc = {Path(r["bundle"]).name: r for r in json.loads((out / "report.json").read_text())["rows"]
           if r["kind"] == "accuracy"}
    assert set(acc) == {Path(b).name for b in bundles.values()}
    assert all(r["n_labels"] == 4 and 0 <= r["top1"] <= 1 for r in acc.values())
    assert acc["fp32"]["top1_drop_pts"] == 0 and acc["int8"]["drop_reference"] == "ort fp32"
    assert 0.5 < acc["int8"]["image_cos_mean"] <= 1.0 + 1e-6


def test_fixed_batch_bundle_gives_the_same_embeddings(tiny_bundles, eval_folder):
    """Same weights exported with a fixed batch of 4: the runner pads and splits, the embeddings must not move."""
    from runtime.bench import BenchConfig, accuracy_rows
    from runtime.bench_runners import bundle_runners

    runners = [r for k in ("fp32", "fixed") for r in bundle_runners(tiny_bundles[k], ["CPUExecutionProvider"], 1)]
    rows = {Path(r["bundle"]).name: r for r in accuracy_rows(runners, BenchConfig(eval_dir=eval_folder), progress=False)}
    assert rows["fixed"]["label"] == "ort fp32 (fixed batch 4)"
    assert rows["fixed"]["image_cos_min"] > 0.99999 and rows["fixed"]["text_cos_min"] > 0.99999
    assert rows["fixed"]["top1"] == rows["fp32"]["top1"] and rows["fixed"]["top1_drop_pts"] == 0


def test_ratios_match_the_latency_rows(cli_run):
    _, out, _ = cli_run
    report = json.loads((out / "report.json").read_text())
    lat = {(r["label"], r["tower"]): r["median_ms"] for r in report["rows"]
           if r["kind"] == "latency" and r["status"] == "ok" and r["batch"] == 1}
    ratios = {(r["baseline"], r["tower"]): r for r in report["ratios"]}
    for base, same_run in (("ort fp32", True), ("ort int8-dynamic", True), ("torch fp32", False)):
        r = ratios[(base, "image")]
        assert r["ratio"] == pytest.approx(lat[("edgeclip int8-cpu", "image")] / lat[(base, "image")])
        assert r["same_run"] is same_run
        total = ratios[(base, "image+text")]
        assert total["int8_ms"] == pytest.approx(lat[("edgeclip int8-cpu", "image")] + lat[("edgeclip int8-cpu", "text")])


def test_markdown_and_png(cli_run):
    _, out, _ = cli_run
    md = (out / "report.md").read_text()
    for heading in ("INT8 (cpu target) vs", "## Tower latency", "## End to end", "## Cold start", "## Accuracy",
                    "## Skipped and failed"):
        assert heading in md
    with Image.open(out / "report.png") as im:
        assert im.format == "PNG" and im.size[0] > 600
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_usage_errors_exit_2(tiny_bundles, tmp_path):
    assert bench("--bundle", tmp_path / "missing", "--report", tmp_path).returncode == 2
    proc = bench("--bundle", tiny_bundles["fp32"], "--report", tmp_path, "--providers", "warp-drive")
    assert proc.returncode == 2 and "unknown execution provider" in proc.stderr


def test_bad_bundle_is_a_clear_error(tmp_path):
    (tmp_path / "not_a_bundle").mkdir()
    proc = bench("--bundle", tmp_path / "not_a_bundle", "--report", tmp_path / "out", "--quick")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
