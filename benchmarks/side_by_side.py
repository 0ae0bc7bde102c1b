"""One run with everything side by side: edgeclip bundles, the torch reference and the quantize_dynamic baseline.

`python -m benchmarks.side_by_side --models s0 --report docs/benchmarks/s0/` builds (or reuses) the bundles,
adds the torch runner, and hands all of them to `runtime.bench.run_bench`, which times every runner alone in
fresh processes, alternating between runners, so the ratios in the report hold on a noisy machine.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional

from benchmarks.reference import BENCH_MODELS, VARIANTS, build_bundle, demo_eval_folder, torch_runner
from runtime.bench import BenchConfig, add_timing_arguments, log, run_bench, skipped_latency_row, timing_plan
from runtime.bench_report import write_report
from runtime.bench_runners import TOWERS, bundle_runners, provider_plan
from runtime.providers import thread_count


def build_parser() -> argparse.ArgumentParser:
    """The command line (see --help)."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.side_by_side",
        description="Benchmark edgeclip bundles, the torch eager fp32 reference and quantize_dynamic in one "
        "run (each runner alone in fresh processes, alternating); writes report.json/.md/.png. Bundles are cached under $EDGECLIP_HOME/bench.",
        epilog="Exit codes: 0 ok, 1 a build or measurement failed, 2 usage error.",
    )
    ap.add_argument("--models", nargs="+", default=["mobileclip-s0"], help=f"model ids or short names ({', '.join(BENCH_MODELS)})")
    ap.add_argument("--variants", nargs="+", default=["fp32", "int8-cpu", "int8-dynamic"], choices=VARIANTS)
    ap.add_argument("--no-torch", action="store_true", help="leave out the torch eager fp32 reference")
    ap.add_argument("--providers", nargs="+", metavar="EP", help="default: every provider of this build (+ XNNPACK, NNAPI as skipped)")
    ap.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    add_timing_arguments(ap)
    ap.add_argument("--threads", type=thread_count, help="threads for ORT sessions and torch (default: library defaults)")
    ap.add_argument("--eval-dir", type=Path, help="evaluation folder/shards for every model (default: the demo model "
                    "uses its synthetic eval split, the random-weight models get fidelity to fp32 only)")
    ap.add_argument("--eval-limit", type=int, default=500)
    ap.add_argument("--no-end-to-end", action="store_true")
    ap.add_argument("--no-cold-start", action="store_true")
    ap.add_argument("--device-variants", nargs="+", default=["int8-cpu"], metavar="VARIANT",
                    help="variants that get the device-path rows: real photos end to end, streaming, cold start and "
                    "peak RSS per set of towers (default int8-cpu, the bundle a device runs)")
    ap.add_argument("--stream-images", type=int, default=0, metavar="N",
                    help="12 MP real-photo JPEGs for the streaming-throughput row (default 0: no such row)")
    ap.add_argument("--photos", type=Path, metavar="DIR",
                    help="folder for the real-photo JPEGs, reused across runs (default: a temporary folder)")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point."""
    import onnxruntime as ort

    from export.onnx_export import ExportError
    from export.registry import UnknownModelError, resolve_model_id
    from runtime.bench import exit_status

    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        models = [resolve_model_id(m) for m in args.models]
        run, skipped = provider_plan(args.providers, ort.get_available_providers())
    except (UnknownModelError, ValueError) as exc:
        ap.error(str(exc))
    eval_dirs = {"demo": demo_eval_folder()} if "demo" in models and not args.eval_dir and not args.no_accuracy else {}
    runners, unbuilt = [], []
    for model in models:
        for variant in args.variants:
            log(f"bundle {model} {variant} ...")
            try:
                runners += bundle_runners(build_bundle(model, variant), run, args.threads)
            except (ExportError, NotImplementedError) as exc:  # e.g. an fp16 graph that misses the parity bar
                log(f"skipped: {model} {variant}: {exc}")
                why = f"bundle not built: {type(exc).__name__}: {exc}"[:500]
                unbuilt += [skipped_latency_row(model, variant, p, t, why) for p in run for t in args.towers]
        if not args.no_torch:
            runners.append(torch_runner(model, threads=args.threads))
    config = BenchConfig(
        towers=args.towers, batches=args.batches, plan=timing_plan(args), threads=args.threads, eval_dir=args.eval_dir,
        eval_dirs=eval_dirs,
        eval_limit=args.eval_limit, end_to_end=not args.no_end_to_end, cold_start=not args.no_cold_start,
        cold_repeats=1 if args.quick else 3, accuracy=not args.no_accuracy,
        stream_images=args.stream_images, photos=args.photos, device_variants=args.device_variants,
        command="python -m benchmarks.side_by_side " + shlex.join(argv if argv is not None else sys.argv[1:]),
        notes=["real architectures use random input-sensitive weights (export.random_init): latency does not depend "
               "on weight values, accuracy there is only fidelity to fp32; `demo` carries trained weights"],
    )
    report = run_bench(runners, config, skipped, progress=not args.no_progress)
    report["rows"] = unbuilt + report["rows"]
    for path in write_report(report, args.report):
        log(f"wrote {path}")
    return exit_status(report)


if __name__ == "__main__":
    sys.exit(main())
