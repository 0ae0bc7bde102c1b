"""`python -m quantize.int8 --model s0 ...`: the INT8 quantizer's command line.

Quantizes an fp32 bundle (`--bundle`, no torch needed) or exports one first (`--checkpoint`, needs torch) with
`quantize.quantizer.quantize_bundle`, and prints its report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from edgeclip.bundle.write import OUTPUT_POLICY, check_output
from edgeclip.errors import missing_build_package
from edgeclip.paths import edgeclip_home
from export.registry import VIT_STEMS

try:
    from quantize.calibration import METHODS
    from quantize.errors import QuantizeError
    from quantize.fetch_calibration import (SOURCE_NAME, calibration_cached, default_dir, ensure_calibration,
                                            fetch_command)
    from quantize.hub_probe import hub_unreachable_reason
    from quantize.quantizer import quantize_bundle
    from quantize.recipes import TARGETS, Target, get_target
    from quantize.search import Goals
except ModuleNotFoundError as _missing:  # run as a command without the build extras: one line, not a traceback
    if __name__ != "__main__":
        raise
    sys.exit(missing_build_package(_missing, "python -m quantize.int8", "quantize"))


def _export_fp32(model_id: str, checkpoint: str | None, target: Target, work: Path,
                 vit_stem: str | None = None) -> Path:
    """Export the fp32 bundle this run quantizes (needs torch; NNAPI gets the `nnapi` preset: batch 1,
    tanh GELU, opset 16, so that each tower stays in one NNAPI partition; XNNPACK gets batch 1)."""
    from export.api import export_bundle

    return export_bundle(model_id, work / "fp32", checkpoint=checkpoint, vit_stem=vit_stem, **target.export_options)


def _check_model(bundle: Path, model_id: str) -> None:
    """--model must name the bundle's model (short names resolve through the export registry)."""
    from edgeclip.bundle import load_bundle

    have = load_bundle(bundle, verify=False).model_id
    if model_id == have:
        return
    try:
        from export.registry import resolve_model_id  # torch-free registry

        wanted = resolve_model_id(model_id)
    except (ImportError, ValueError):
        wanted = model_id
    if wanted != have:
        raise QuantizeError(f"--model {model_id} does not match the bundle's model {have!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m quantize.int8",
        description="INT8 static quantization of a MobileCLIP bundle, calibrated on reinforced-dataset samples "
                    "(DataCompDR/DFNDR shards or a folder of images). Writes an INT8 bundle with report.json and "
                    "report.md (fidelity vs fp32, retrieval, teacher agreement, same-run speed ratio).")
    p.add_argument("--model", required=True, help="model id or short name (s0, s1, s2, b, demo, mobileclip2-s0, ...)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="checkpoint to export first (Apple .pt, OpenCLIP .bin/.safetensors); "
                     "needs torch")
    src.add_argument("--bundle", help="existing fp32 bundle directory to quantize (no torch needed)")
    p.add_argument("--vit-stem", choices=VIT_STEMS,
                   help="ViT-B models, when exporting: the stem variant, as in `python -m export --vit-stem` "
                        "(default: the one the weights were trained with)")
    p.add_argument("--calibration", nargs="+", metavar="PATH",
                   help="webdataset tar shards, folders of shards or images, or globs; a dataset root with calib/ "
                        "and eval/ folders uses them as the two splits; `datacompdr-12m` (the default, except for "
                        "--model demo: its synthetic dataset) fetches the first DataCompDR-12M samples once into "
                        "$EDGECLIP_HOME/calibration/datacompdr-12m (see python -m quantize.fetch_calibration)")
    p.add_argument("--eval", nargs="+", metavar="PATH", dest="eval_paths",
                   help="held-out evaluation samples (default: the first --eval-samples calibration samples, "
                        "which are then not used for calibration)")
    p.add_argument("--samples", type=int, default=500, help="calibration images (default 500)")
    p.add_argument("--eval-samples", type=int, default=64, help="evaluation images (default 64)")
    p.add_argument("--search-samples", type=int, default=16,
                   help="calibration images reused to search which nodes stay float (default 16)")
    p.add_argument("--captions", type=int, default=1024,
                   help="calibration captions for the text tower, original + synthetic (default 1024)")
    p.add_argument("--views", type=int, default=1, help="stored augmented views per calibration image (default 1)")
    p.add_argument("--rand-augment", action="store_true",
                   help="also re-apply the stored RandAugment ops (default: only the stored crop)")
    p.add_argument("--target", choices=sorted(TARGETS), default="cpu",
                   help="cpu: U8 activations/S8 weights for the CPU EP; xnnpack: S8/S8 per-channel QDQ Conv, batch 1, "
                        "linear layers as 2-D fp32 Gemm; "
                        "nnapi: U8/symmetric per-channel S8, fixed shapes, tanh GELU (default cpu)")
    p.add_argument("--method", choices=METHODS, default="minmax", help="calibration method (default minmax)")
    p.add_argument("--no-moving-average", action="store_true",
                   help="MinMax over all batches instead of the mean of per-batch extremes")
    p.add_argument("--bins", type=int, default=2048, help="histogram bins for percentile/entropy (default 2048)")
    p.add_argument("--percentile", type=float, default=99.999, help="percentile for --method percentile")
    p.add_argument("--min-cosine", type=float, default=0.995,
                   help="fidelity goal: mean cosine INT8 vs fp32 per tower (default 0.995)")
    p.add_argument("--min-centered", type=float, default=0.90,
                   help="fidelity goal: mean centered cosine per tower (default 0.90)")
    p.add_argument("--min-speedup", type=float, default=1.0,
                   help="speed guard: a tower slower than this ratio vs fp32 stays fp32 (default 1.0)")
    p.add_argument("--out", help="output bundle folder (default $EDGECLIP_HOME/bundles/<model>-int8-<target>): "
                   f"{OUTPUT_POLICY}")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)  # graph-cleanup warnings are noise here
    from edgeclip.errors import EdgeclipError

    try:
        return _main(args)
    except (QuantizeError, EdgeclipError) as exc:  # export/bundle/tokenizer errors are EdgeclipErrors
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _offline_preflight(args: argparse.Namespace) -> None:
    """Without the Hub, name at once what to provide and where (checkpoint, calibration shards), not after retries."""
    missing = []
    if not (args.bundle or args.checkpoint):
        from export.checkpoint import cache_path
        from export.registry import get_spec

        try:
            spec = get_spec(args.model)
        except ValueError as exc:  # an unknown name: say so before fetching any data
            raise QuantizeError(str(exc)) from None
        if spec.sources[0].url and not any(cache_path(spec, s).is_file() for s in spec.sources):
            missing.append(f"the checkpoint {spec.sources[0].url}\n     put it at {cache_path(spec, spec.sources[0])}")
    if not calibration_cached():
        n = args.samples + args.eval_samples
        missing.append(f"the calibration shards: run `{fetch_command(n)}` where the Hub is reachable\n"
                       f"     and copy that folder to {default_dir()}")
    reason = hub_unreachable_reason() if missing else None
    if reason:
        steps = "".join(f"\n  {i}. {m}" for i, m in enumerate(missing, 1))
        target = f" --target {args.target}" if args.target != "cpu" else ""
        raise QuantizeError(f"the Hugging Face Hub is not reachable ({reason}); provide:{steps}\n"
                            f"then run: python -m quantize.int8 --model {args.model}{target}")


def _main(args: argparse.Namespace) -> int:
    target = get_target(args.target)
    model_id = args.model
    if args.vit_stem and args.bundle:
        raise QuantizeError("--vit-stem applies when exporting from a checkpoint, not to an existing --bundle")
    calibration = args.calibration
    if model_id == "demo" and not calibration:
        from quantize.synthetic import ensure_dataset

        calibration = [str(ensure_dataset(progress=not args.quiet, splits=("calib", "eval")))]
    if not calibration or calibration == [SOURCE_NAME]:  # the default for real models: DataCompDR-12M samples
        _offline_preflight(args)
        wanted = args.samples + (0 if args.eval_paths else args.eval_samples)
        calibration = [str(ensure_calibration(wanted, progress=not args.quiet))]
    goals = Goals(args.min_cosine, args.min_centered, args.min_speedup)
    if args.out:
        check_output(args.out)  # before an export of minutes
    with tempfile.TemporaryDirectory(prefix="edgeclip-int8-export-") as tmp:
        if args.bundle:
            fp32 = Path(args.bundle)
            _check_model(fp32, model_id)
        else:
            fp32 = _export_fp32(model_id, args.checkpoint, target, Path(tmp), args.vit_stem)
        from edgeclip.bundle import load_bundle

        out = Path(args.out) if args.out else edgeclip_home() / "bundles" / \
            f"{load_bundle(fp32, verify=False).model_id}-int8-{target.name}"
        path = quantize_bundle(fp32, out, target=target.name, calibration=calibration, samples=args.samples,
                               eval_samples=args.eval_samples, eval_paths=args.eval_paths, method=args.method,
                               moving_average=not args.no_moving_average, num_bins=args.bins,
                               percentile=args.percentile, views=args.views, rand_augment=args.rand_augment,
                               goals=goals, search_samples=args.search_samples, captions=args.captions,
                               progress=not args.quiet)
    report = json.loads((path / "report.json").read_text())
    if args.json:
        print(json.dumps({"bundle": str(path), "report": report}, indent=2))
    else:
        print((path / "report.md").read_text())
        print(f"INT8 bundle written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
