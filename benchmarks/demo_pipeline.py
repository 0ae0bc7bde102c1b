"""The main job on the embedded default: demo checkpoint → ONNX → INT8 per target → one comparison table.

Runs offline: the demo weights ship in the package and the synthetic reinforced shards are generated on
first use. Every figure in the table is measured in this run.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeclip.files import atomic_path
from runtime.providers import thread_count

TARGETS = ("cpu", "xnnpack", "nnapi")


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class TorchDemo:
    """fp32 PyTorch reference of the demo model, fed with the runtime's own preprocessing."""

    def __init__(self, manifest: dict, threads: int) -> None:
        import torch

        from edgeclip.tokenizer import load_tokenizer
        from export.api import build_model

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = build_model("demo", reparameterize=False).eval()
        self.spec = manifest["preprocess"]
        self.tokenizer = load_tokenizer()

    def encode_image(self, images: Sequence) -> np.ndarray:
        from edgeclip.preprocess import preprocess_image

        x = np.stack([preprocess_image(im, self.spec) for im in images])
        with self.torch.no_grad():
            return self.model.encode_image(self.torch.from_numpy(x)).numpy()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.tokenizer(list(texts))
        with self.torch.no_grad():
            return self.model.encode_text(self.torch.from_numpy(ids)).numpy()


def _evaluate(name: str, encoder, zs, ref: dict | None, repeats: int) -> dict:
    """Zero-shot top-1, embedding cosine against the torch rows, batch-1 latency of each tower."""
    from runtime.bench_accuracy import class_embeddings, cosine_stats, top1

    images = list(zs.images)
    texts = [p for prompts in zs.class_prompts for p in prompts]
    img = np.asarray(encoder.encode_image(images))
    txt = np.asarray(encoder.encode_text(texts))
    row = {
        "name": name,
        "zero_shot_top1": 100.0 * top1(img, class_embeddings(txt, zs.class_prompts), zs.labels),
        "image_latency_ms": _median_ms(lambda: encoder.encode_image(images[:1]), repeats),
        "text_latency_ms": _median_ms(lambda: encoder.encode_text(texts[:1]), repeats),
        "image_cos": cosine_stats(img, ref["img"])["cos_mean"] if ref else 1.0,
        "text_cos": cosine_stats(txt, ref["txt"])["cos_mean"] if ref else 1.0,
    }
    return row, {"img": img, "txt": txt}


def _table(rows: list[dict]) -> str:
    base = rows[0]
    head = ("| model | INT8 towers | zero-shot top-1 (%) | drop (pt) | image cos | text cos "
            "| image ms (b=1) | text ms (b=1) |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r.get('int8_towers', '—')} | {r['zero_shot_top1']:.1f} "
            f"| {base['zero_shot_top1'] - r['zero_shot_top1']:+.1f} "
            f"| {r['image_cos']:.4f} | {r['text_cos']:.4f} | {r['image_latency_ms']:.2f} | {r['text_latency_ms']:.2f} |"
        )
    return "\n".join(lines)


def _int8_towers(bundle: Path) -> str:
    """Which towers of a quantized bundle really run in INT8 (the speed guard may keep one in fp32)."""
    towers = json.loads((bundle / "manifest.json").read_text())["towers"]
    return "+".join(name for name, spec in towers.items() if spec.get("precision") == "int8") or "none"


def run(out: Path, targets: Sequence[str], samples: int, threads: int, repeats: int, speed_guard: bool) -> dict:
    """Export, quantize and measure; returns the report dictionary."""
    from edgeclip import Encoder
    from export.api import export_bundle
    from quantize.quantizer import quantize_bundle
    from quantize.recipes import get_target
    from quantize.search import Goals
    from quantize.synthetic import ensure_dataset, load_zero_shot

    out.mkdir(parents=True, exist_ok=True)
    steps = 2 + len(targets)
    step = iter(range(1, steps + 1))
    print(f"[{next(step)}/{steps}] synthetic reinforced dataset", flush=True)
    data = ensure_dataset(splits=("calib", "eval"))
    zs = load_zero_shot(data)
    print(f"[{next(step)}/{steps}] export demo → {out / 'fp32'}", flush=True)
    fp32 = export_bundle("demo", out / "fp32")
    sources = {(False, None): fp32}  # fp32 graphs per (nnapi preset, batch): NNAPI and XNNPACK need batch-1 graphs
    bundles = {}
    for target in targets:
        print(f"[{next(step)}/{steps}] INT8 static quantization, target {target}", flush=True)
        options = get_target(target).export_options
        key = (options["nnapi"], options["batch"])
        if key not in sources:
            folder = out / ("fp32-nnapi" if options["nnapi"] else "fp32-b1")
            sources[key] = export_bundle("demo", folder, **options)
        src = sources[key]
        goals = Goals() if speed_guard else Goals(min_speedup=0.0)
        bundles[target] = quantize_bundle(src, out / f"int8-{target}", target=target, goals=goals,
                                          calibration=[data / "calib"], samples=samples)
    print("measuring (zero-shot on the held-out split, cosine, latency)…", flush=True)
    torch_ref = TorchDemo(json.loads((fp32 / "manifest.json").read_text()), threads)
    rows = []
    first, ref = _evaluate("fp32 torch", torch_ref, zs, None, repeats)
    rows.append(first)
    enc = Encoder(fp32, providers="cpu", threads=threads)
    rows.append(_evaluate("fp32 ONNX (cpu)", enc, zs, ref, repeats)[0])
    for target, path in bundles.items():
        enc = Encoder(path, providers="cpu", threads=threads)
        row = _evaluate(f"INT8 {target} (run on cpu EP)", enc, zs, ref, repeats)[0]
        row["int8_towers"] = _int8_towers(path)
        rows.append(row)
    example = _save_example(zs, out)
    report = {"rows": rows, "threads": threads, "eval_images": len(zs.images),
              "classes": len(zs.class_names), "bundles": {"fp32": str(fp32), **{k: str(v) for k, v in bundles.items()}},
              "example": example}
    md = _table(rows)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(md + "\n")
    report["markdown"] = md
    return report


def _save_example(zs, out: Path) -> dict:
    """Write one held-out image as example.png with four candidate labels (its true class among them) to try."""
    truth = zs.class_names[int(zs.labels[0])]
    colour, shape = truth.split(" ", 1)
    others = [n for n in zs.class_names if n != truth]
    labels = [truth,
              next(n for n in others if n.startswith(colour + " ")),   # same colour, other shape
              next(n for n in others if n.endswith(" " + shape)),      # same shape, other colour
              next(n for n in others if not n.startswith(colour + " ") and not n.endswith(" " + shape))]
    with atomic_path(out / "example.png") as tmp:
        zs.images[0].save(tmp, format="PNG")
    return {"image": str((out / "example.png").resolve()), "true_class": truth, "labels": sorted(labels)}


def next_steps(report: dict) -> str:
    """Where the bundles are and one command to try with them."""
    bundles = report["bundles"]
    width = max(len(Path(path).name) for path in bundles.values())
    lines = ["bundles (each a folder: manifest.json, ONNX towers, tokenizer):"]
    lines += [f"  {Path(path).name:<{width}}  {path}" for path in bundles.values()]
    example = report["example"]
    bundle = next((path for name, path in bundles.items() if name != "fp32"), bundles["fp32"])
    lines += [f"try one on a held-out image (true class: {example['true_class']}):",
              f"  edgeclip classify {shlex.quote(bundle)} {shlex.quote(example['image'])} "
              f"--labels {shlex.quote(','.join(example['labels']))}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.demo_pipeline",
        description="Run export → INT8 quantization → evaluation on the embedded demo model, offline, "
                    "and print zero-shot top-1, embedding cosine and latency for fp32 torch, fp32 ONNX "
                    "and INT8 per target.",
    )
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    parser.add_argument("--targets", default=",".join(TARGETS), help="INT8 targets, comma-separated (default: all)")
    parser.add_argument("--samples", type=int, default=256, help="calibration samples per tower (default: 256)")
    parser.add_argument("--threads", type=thread_count, default=2, help="threads for torch and ONNX Runtime (default: 2)")
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats per latency figure (default: 30)")
    parser.add_argument("--speed-guard", action="store_true",
                        help="keep a tower in fp32 when INT8 is not faster (quantize.int8's default). Off here: "
                             "the demo is so small that INT8 rarely pays off on a desktop CPU, and the point of "
                             "the demo is to measure what INT8 costs in accuracy")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = sorted(set(targets) - set(TARGETS))
    if bad:
        parser.error(f"unknown target(s) {bad}; choose from {list(TARGETS)}")
    try:
        report = run(args.out, targets, args.samples, args.threads, args.repeats, args.speed_guard)
    except Exception as exc:  # one clear line for the user; the traceback helps no one here
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2))
    else:
        print()
        print(report["markdown"])
        print(f"\n{report['eval_images']} held-out images, {report['classes']} classes; "
              f"report: {args.out / 'report.json'}")
        print(next_steps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
