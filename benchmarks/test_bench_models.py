"""pytest-benchmark suite over model × precision × provider × tower × batch, plus end-to-end, cold start,
peak memory, accuracy and the side-by-side ratio run (marker `bench`; not part of the default test run)."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import onnxruntime as ort
import pytest

from benchmarks.conftest import CONFIG, SAME_RUN
from benchmarks.reference import BENCH_MODELS, VARIANTS, demo_eval_folder
from runtime.bench import (accuracy_rows, end_to_end_rows, make_test_jpeg, process_rows, run_bench,
                           skipped_latency_row)
from runtime.bench_runners import ALWAYS_ASKED, image_batch, provider_plan, token_batch
from runtime.bench_timing import summarize

pytestmark = pytest.mark.bench

RUN_PROVIDERS, SKIPPED_PROVIDERS = provider_plan(None, ort.get_available_providers())
PROVIDERS = RUN_PROVIDERS + [p for p in ALWAYS_ASKED if p not in RUN_PROVIDERS]
CPU = "CPUExecutionProvider"
# A target's INT8 bundle is made for that target's provider, so it runs there; the CPU runs it too for `demo`
# only, whose zero-shot accuracy per precision the report shows.
TARGET_PROVIDER = {"int8-xnnpack": "XnnpackExecutionProvider", "int8-nnapi": "NnapiExecutionProvider"}


def engines(model: str) -> list[tuple[str, str]]:
    """(variant, provider) pairs of one model: ONNX variants per provider as above, torch on the CPU."""
    pairs = []
    for v in VARIANTS:
        where = [TARGET_PROVIDER[v]] + ([CPU] if model == "demo" else []) if v in TARGET_PROVIDER else PROVIDERS
        pairs += [(v, p) for p in PROVIDERS if p in where]
    return pairs + [("torch-fp32", "torch-cpu")]


TIMED_CALLS = CONFIG.plan.runs * CONFIG.plan.processes  # as many as runtime.bench times per measurement
CASES = [(m, v, p) for m in BENCH_MODELS for v, p in engines(m)]
ONNX_CASES = [c for c in CASES if c[1] != "torch-fp32"]


def config_with(**changes):
    """The suite's config with some fields changed."""
    return replace(CONFIG, **changes)


def _provider_or_skip(collector, model: str, variant: str, provider: str, towers=("image", "text")) -> None:
    """Record the skipped row for a provider this build lacks (the report lists it), then skip the test."""
    reason = SKIPPED_PROVIDERS.get(provider)
    if reason:
        collector.add([skipped_latency_row(model, variant, provider, t, reason) for t in towers], "pytest-benchmark")
        pytest.skip(f"{provider}: {reason}")


@pytest.fixture(scope="module")
def jpeg():
    with tempfile.TemporaryDirectory() as tmp:
        yield make_test_jpeg(Path(tmp))


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.parametrize("model,variant,provider", CASES)
def test_tower_latency(benchmark, collector, runners, model, variant, provider, tower, batch):
    _provider_or_skip(collector, model, variant, provider, (tower,))
    runner = runners(model, variant, provider)
    try:
        fn = runner.tower(tower)
    except Exception as exc:  # the provider refused the graph (e.g. fp16 ops on a CPU-only build)
        collector.add([{"kind": "latency", **runner.describe(), "tower": tower, "status": "skipped",
                        "reason": f"{type(exc).__name__}: {exc}"[:500]}], "pytest-benchmark")
        pytest.skip(f"{runner.label} on {provider}: {exc}")
    x = image_batch(runner.image_size, batch) if tower == "image" else token_batch(runner.context_length, batch)
    benchmark.group = f"{model} {tower} b{batch}"
    benchmark.extra_info.update(runner.describe())
    benchmark.pedantic(fn, args=(x,), rounds=TIMED_CALLS, warmup_rounds=CONFIG.plan.warmup, iterations=1)
    stats = summarize(list(benchmark.stats.stats.data))
    collector.add([{"kind": "latency", **runner.describe(), "tower": tower, "batch": batch, "status": "ok", **stats,
                    "per_item_ms": stats["median_ms"] / batch}], "pytest-benchmark (sequential)")


@pytest.mark.parametrize("model,variant,provider", ONNX_CASES)
def test_end_to_end(benchmark, collector, runners, jpeg, model, variant, provider):
    """JPEG file -> normalized embedding through edgeclip.Encoder, with decode + preprocessing's share."""
    _provider_or_skip(collector, model, variant, provider, ("image",))
    from edgeclip import Encoder

    runner = runners(model, variant, provider)
    rows = end_to_end_rows([runner], CONFIG, jpeg, progress=False)
    collector.add(rows, SAME_RUN)
    assert all(r["status"] == "ok" for r in rows), rows
    enc = Encoder(runner.bundle, providers=[provider], threads=CONFIG.threads)
    benchmark.group = f"{model} end-to-end"
    benchmark.pedantic(enc.encode_image, args=([jpeg],), rounds=TIMED_CALLS, warmup_rounds=CONFIG.plan.warmup)


@pytest.mark.parametrize("model,variant,provider", ONNX_CASES)
def test_cold_start_and_peak_memory(collector, runners, jpeg, model, variant, provider):
    """Import + sessions + first embedding, and peak RSS holding both towers, each in a fresh process."""
    _provider_or_skip(collector, model, variant, provider)
    rows = process_rows([runners(model, variant, provider)], CONFIG, jpeg, progress=False)
    collector.add(rows, SAME_RUN)
    assert all(r["status"] == "ok" for r in rows), rows


@pytest.mark.parametrize("model", BENCH_MODELS)
def test_accuracy(collector, runners, model):
    """Top-1 (demo: synthetic eval split) and cosine vs fp32 for every variant on every provider, plus torch."""
    got = [runners(model, v, p) for v, p in engines(model) if p not in SKIPPED_PROVIDERS]
    eval_dirs = {"demo": demo_eval_folder()} if model == "demo" else {}
    rows = accuracy_rows(got, config_with(eval_dirs=eval_dirs), progress=False)
    collector.add(rows, SAME_RUN)
    assert rows and all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]


@pytest.mark.parametrize("model", BENCH_MODELS)
def test_side_by_side_batch1(collector, runners, model):
    """edgeclip INT8 (cpu) vs ORT fp32 vs quantize_dynamic vs torch eager fp32 in one run (alternating processes)."""
    got = [runners(model, v, CPU) for v in ("int8-cpu", "fp32", "int8-dynamic")] + [runners(model, "torch-fp32", "torch-cpu")]
    report = run_bench(got, config_with(batches=(1,), end_to_end=False, cold_start=False, accuracy=False),
                       progress=False)
    collector.add(report["rows"], SAME_RUN)
    ratios = [r for r in report["ratios"] if r["tower"] == "image+text"]
    assert {r["baseline"] for r in ratios} == {"torch fp32", "ort fp32", "ort int8-dynamic"}
    assert all(r["same_run"] for r in ratios)


