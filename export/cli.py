"""`python -m export`: checkpoint -> reparameterized, validated ONNX bundle (exit 0 ok, 1 failure, 2 usage)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from edgeclip.bundle.write import OUTPUT_POLICY
from export.registry import MODELS, VIT_STEMS, UnknownModelError, get_spec, resolve_model_id

EPILOG = """\
examples:
  python -m export --model s0 --checkpoint mobileclip_s0.pt --out bundles/s0
  python -m export --model mobileclip2-s0 --checkpoint open_clip_model.safetensors --out bundles/mc2-s0
  python -m export --model s0 --checkpoint mobileclip_s0.pt --nnapi --out bundles/s0-nnapi
  python -m export --model s0-timm --checkpoint pytorch_model.bin --out bundles/s0-timm
  python -m export --list

Without --checkpoint the file is looked up in $EDGECLIP_HOME/checkpoints/<model>/ (default
~/.cache/edgeclip), then downloaded from the Hugging Face Hub if huggingface_hub is installed.
Checkpoints: Apple's ml-mobileclip .pt files, OpenCLIP .bin/.safetensors, or Apple's timm image towers
(apple/mobileclip_*_timm: image-only bundle, preprocessing from the config.json beside the file); the
layout is detected, and a timm file given with --model s0 exports as s0-timm.
"""


def _batch(value: str):
    if value == "dynamic":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes 'dynamic' or a positive integer, not {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--batch must be >= 1, not {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Export a MobileCLIP checkpoint to an edgeclip bundle: reparameterized "
                                            "image/text ONNX graphs checked against PyTorch, tokenizer and manifest.",
                                epilog=EPILOG)
    p.add_argument("--model", help="model: s0 s1 s2 b, mobileclip2-s0/-s2/-b/-s3/-s4, demo (see --list)")
    p.add_argument("--checkpoint", help="checkpoint file (.pt/.pth/.bin/.safetensors); default: cache, then Hub")
    p.add_argument("--out", help=f"bundle folder to write: {OUTPUT_POLICY}")
    p.add_argument("--nnapi", action="store_true",
                   help="graphs for Android NNAPI in one partition: batch 1, tanh GELU, opset 16 (fixed shapes, "
                        "no Erf, LayerNormalization decomposed); another fixed --batch or a lower --opset may be "
                        "given, settings NNAPI cannot run are refused")
    p.add_argument("--batch", type=_batch,
                   help="'dynamic' or a fixed batch size N (default: dynamic; 1 with --nnapi)")
    p.add_argument("--gelu", choices=("exact", "tanh"),
                   help="GELU form in the graphs (default: exact; tanh with --nnapi, as NNAPI has no Erf)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: 17; 16 with --nnapi)")
    p.add_argument("--vit-stem", choices=VIT_STEMS,
                   help="ViT-B models (b, b-lt, mobileclip2-b): pad the first stem conv as Apple's code does "
                        "('padded') or not, as timm/OpenCLIP do ('unpadded'); default: the network the weights were "
                        "trained in (padded for MobileCLIP v1 B and B-LT in either layout, unpadded for MobileCLIP2-B)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="weights and compute precision; inputs/outputs stay float32")
    p.add_argument("--towers", nargs="+", choices=("image", "text"),
                   help="which towers to export (default: all the checkpoint has; image only for timm files)")
    p.add_argument("--list", action="store_true", help="list the supported models with their sizes and exit")
    p.add_argument("--json", action="store_true", help="print the result (or the model list) as JSON")
    return p


def list_models() -> list[dict]:
    """One row per registered model: ids, sizes, layouts and where its checkpoints come from."""
    rows = []
    for spec in MODELS.values():
        rows.append({"model_id": spec.model_id, "aliases": list(spec.aliases), "name": spec.display_name,
                     "image_size": spec.image_size, "embed_dim": spec.embed_dim,
                     "params_image_m": spec.params_image_m, "params_text_m": spec.params_text_m,
                     "layouts": list(spec.layouts), "towers": list(spec.towers),
                     "sources": [{"layout": s.layout, "repo": s.repo, "file": s.filename} for s in spec.sources]})
    return rows


def _print_list(as_json: bool) -> None:
    rows = list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'model':20} {'alias':18} {'image':>6} {'dim':>4} {'params img+txt (M)':>19}  layouts")
    for r in rows:
        size = f"{r['params_image_m']:.1f} + {r['params_text_m']:.1f}" if r["params_image_m"] else "tiny"
        if r["towers"] == ["image"]:
            size = f"{r['params_image_m']:.1f} image only"
        print(f"{r['model_id']:20} {','.join(r['aliases']):18} {r['image_size']:>6} {r['embed_dim']:>4} "
              f"{size:>19}  {', '.join(r['layouts'])}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        _print_list(args.json)
        return 0
    if not args.model or not args.out:
        parser.print_usage(sys.stderr)
        print("python -m export: error: --model and --out are required (or use --list)", file=sys.stderr)
        return 2
    try:
        model_id = resolve_model_id(args.model)
    except UnknownModelError as exc:
        print(f"python -m export: error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from edgeclip.errors import EdgeclipError, missing_build_package

    try:
        from export.api import export_bundle, resolve_options, vit_stem_for
    except ModuleNotFoundError as exc:
        print(missing_build_package(exc, "python -m export", "export"), file=sys.stderr)
        return 1

    try:
        options = resolve_options(args.nnapi, args.batch, args.gelu, args.opset)
        vit_stem_for(get_spec(model_id), args.vit_stem)
    except EdgeclipError as exc:
        print(f"python -m export: error: {exc}", file=sys.stderr)
        return 2

    steps = 3 + 2 * len(set(args.towers or ("image", "text")))
    with tqdm(total=steps, desc=f"export {model_id}", unit="step", file=sys.stderr,
              bar_format="{desc}: {n_fmt}/{total_fmt} {bar} [{elapsed}]") as bar:
        calls = []

        def progress(message: str) -> None:
            if calls:
                bar.update(1)
            calls.append(message)
            bar.set_description_str(f"export {model_id}: {message}")

        try:
            out = export_bundle(model_id, args.out, checkpoint=args.checkpoint, batch=options.batch,
                                gelu=options.gelu, opset=options.opset, precision=args.precision,
                                towers=tuple(args.towers) if args.towers else None, progress=progress, nnapi=options.nnapi,
                                vit_stem=args.vit_stem)
        except EdgeclipError as exc:
            bar.close()
            print(f"python -m export: error: {exc}\nNo bundle was written.", file=sys.stderr)
            return 1
        bar.update(bar.total - bar.n)
    manifest = json.loads((out / "manifest.json").read_text())
    if args.json:
        print(json.dumps({"bundle": str(out), "manifest": manifest}, indent=2))
    else:
        print(f"wrote {out}")
        for name, tower in manifest["towers"].items():
            p = tower["parity"]
            print(f"  {name}: {tower['file']} {tower['precision']} batch={tower['batch']} opset={tower['opset']} "
                  f"nodes={tower['node_counts']['onnx_nodes']} vs torch: cos {p['cosine']:.7f}, max|d| {p['max_abs_diff']:.2e}")
        for name, ready in (manifest.get("device_readiness") or {}).items():
            n, x = ready["nnapi"], ready.get("xnnpack")
            print(f"  {name} NNAPI: {n['partitions']} partition(s), {n['nodes_covered']}/{n['nodes_total']} nodes"
                  if n else f"  {name} NNAPI: not analysed ({ready.get('error')})")
            if x:
                print(f"  {name} XNNPACK: {x['partitions']} partition(s), {x['nodes_taken']}/{x['nodes_total']} nodes, "
                      f"{100 * (x['mac_share'] or 0):.1f}% of multiply-accumulates")
    return 0
