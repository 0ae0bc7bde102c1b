"""The `edgeclip` command: inspect a bundle, embed files and texts, zero-shot classify, check device readiness."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgeclip import __version__, photo_cli
from edgeclip.errors import EdgeclipError, InputError
from edgeclip.files import atomic_path
from runtime.providers import thread_count

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
MobileCLIP embeddings with ONNX Runtime, no PyTorch. A BUNDLE is a directory made by
`python -m quantize.int8` or export (manifest.json, image.onnx, text.onnx, tokenizer.json), or
hf-hub:ORG/REPO for one published on the Hugging Face Hub (needs the hub extra; see docs/hub.md).

examples:
  edgeclip info bundle/
  edgeclip embed bundle/ photos/*.jpg --text "a dog" --out emb.npy
  edgeclip classify bundle/ cat.jpg --labels cat,dog,car
  edgeclip classify hf-hub:ORG/REPO cat.jpg --labels cat,dog,car
  edgeclip index bundle/ ~/Pictures && edgeclip search "a dog on a beach"
  edgeclip --providers xnnpack --threads 4 --json classify bundle/ cat.jpg --labels cat,dog

exit codes: 0 ok, 1 failure (bad bundle, image, provider...), 2 usage error.
"""


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (a fresh parser each time: argparse shares actions)."""
    p = argparse.ArgumentParser(add_help=False)
    S = argparse.SUPPRESS
    p.add_argument("--providers", default=S, metavar="P[,P...]",
                   help="execution providers in priority order: auto (default: nnapi > xnnpack > cpu among those "
                        "this onnxruntime has), cpu, xnnpack, nnapi or ONNX Runtime names")
    p.add_argument("--threads", type=thread_count, default=S, metavar="N",
                   help="intra-op threads, 1 to 4 per CPU core (default: ONNX Runtime's choice)")
    p.add_argument("--json", action="store_true", default=S, help="print one JSON document on stdout")
    p.add_argument("-v", "--verbose", action="store_true", default=S, help="log provider choices and other details")
    return p


GLOBAL_DEFAULTS = {"providers": "auto", "threads": None, "json": False, "verbose": False}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeclip", description=DESCRIPTION, parents=[_common()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edgeclip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", parents=[_common()], help="show a bundle's model, towers and preprocessing (verifies sha256)")
    p.add_argument("bundle", metavar="BUNDLE")

    p = sub.add_parser("embed", parents=[_common()], help="embed image files and/or texts; rows: images first, then texts")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("files", nargs="*", metavar="FILES", help="image files")
    p.add_argument("--text", action="append", default=[], metavar="TEXT", help="a text to embed (repeatable)")
    p.add_argument("--out", type=_out_file, metavar="X.npy", help="write the float32 [N, D] embeddings here (atomically)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per ONNX Runtime call (default 8)")
    p.add_argument("--preprocess", choices=("fast", "exact"), metavar="MODE",
                   help="image preprocessing: fast (JPEGs decoded at reduced scale) or exact (torchvision-equal); "
                        "default: the bundle's, else fast")

    p = sub.add_parser("classify", parents=[_common()], help="zero-shot classify images against labels")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--labels", required=True, metavar="A,B,C", help="comma-separated class names")
    p.add_argument("--templates", nargs="+", metavar="T",
                   help="prompt templates with {} for the label (default: a built-in CLIP-style list)")
    p.add_argument("--top-k", type=_positive, default=5, metavar="K", help="labels to show per image (default 5)")

    p = sub.add_parser("doctor", parents=[_common()], help="device readiness: NNAPI/XNNPACK coverage of the towers")
    p.add_argument("bundle", metavar="BUNDLE")
    p = sub.add_parser("recover", parents=[_common()],
                       help="finish or undo a bundle write that was cut short (killed), as the next write would")
    p.add_argument("bundle", metavar="BUNDLE")
    photo_cli.add_parsers(sub, _common)
    return parser


def _positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _out_file(text: str) -> str:
    """argparse type for --out: a non-empty file name (an empty one used to print to stdout instead)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a file such as emb.npy, got an empty name")
    return text


def _providers(arg: str) -> Any:
    names = [n.strip() for n in arg.split(",") if n.strip()]
    if not names:
        raise InputError("--providers needs at least one name")
    return names[0] if len(names) == 1 else names


def _encoder(args: argparse.Namespace, bundle: Any = None, **options: Any):
    from edgeclip.encoder import Encoder

    return Encoder(bundle or args.bundle, providers=_providers(args.providers), threads=args.threads, **options)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write an .npy atomically: a temp file in the same folder, then rename; errors name `path`, not the temp file."""
    if path.is_dir():
        raise InputError(f"--out {path} is a directory; give a file name such as {path / 'embeddings.npy'}")
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    except OSError as exc:
        raise EdgeclipError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_info(args: argparse.Namespace) -> dict:
    from edgeclip.bundle import load_bundle
    from runtime.graph_contract import check_bundle_graphs
    from runtime.providers import resolve_providers, short_name

    bundle = load_bundle(args.bundle, verify=True)
    check_bundle_graphs(bundle)  # the manifest's dims, names and shapes are what the graphs say
    towers = {}
    for name, spec in bundle.towers.items():
        fixed = isinstance(spec.get("batch"), int)
        auto = resolve_providers(_providers(args.providers), fixed_shape=fixed, threads=args.threads)
        towers[name] = {
            "file": spec["file"], "precision": spec.get("precision"), "batch": spec.get("batch"),
            "input_shape": spec["inputs"][0].get("shape"), "bytes": bundle.tower_path(name).stat().st_size,
            "providers": [short_name(p) for p, _ in auto],
        }
    quant = bundle.manifest.get("quantization") or {}
    return {
        "bundle": str(bundle.root), "model_id": bundle.model_id,
        "format_version": bundle.manifest["format_version"], "embed_dim": bundle.embed_dim, "verified": True,
        "towers": towers, "preprocess": bundle.preprocess, "tokenizer": bundle.manifest.get("tokenizer"),
        "quantization_target": quant.get("target"),
    }


def print_info(info: dict) -> None:
    print(f"{info['bundle']}: {info['model_id']} (format {info['format_version']}, embed_dim {info['embed_dim']}, sha256 ok)")
    for name, t in info["towers"].items():
        print(f"  {name}: {t['file']} {t['precision']} batch={t['batch']} input={t['input_shape']} "
              f"{t['bytes'] / 1e6:.1f} MB, providers: {', '.join(t['providers'])}")
    pp = info["preprocess"]
    if "image" in info["towers"]:
        print(f"  preprocess: resize {pp.get('resize')} ({pp.get('interpolation')}), center crop {pp.get('crop_size')}, "
              f"mean {pp.get('mean')}, std {pp.get('std')}")
    if info["quantization_target"]:
        print(f"  quantized for: {info['quantization_target']}")


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="embedding", disable=not enabled, file=sys.stderr)


def cmd_embed(args: argparse.Namespace) -> dict:
    """Stream the files through Encoder.embed_images (decode threads overlap inference), then the texts."""
    from edgeclip.encoder import Encoder

    if not args.files and not args.text:
        raise InputError("nothing to embed: give image FILES and/or --text")
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    towers = (["image"] if args.files else []) + (["text"] if args.text else [])
    enc = Encoder(args.bundle, providers=_providers(args.providers), threads=args.threads, towers=towers,
                  preprocess_mode=args.preprocess)
    parts = []
    if args.files:
        with _progress(len(args.files), enabled=len(args.files) > args.batch_size) as bar:
            for batch in enc.embed_images(args.files, batch_size=args.batch_size):
                parts.append(batch)
                bar.update(len(batch))
    if args.text:
        parts.append(enc.encode_text(args.text))
    emb = np.concatenate(parts)
    if args.out:
        _save_npy(Path(args.out), emb)
    rows = [{"kind": "image", "source": f} for f in args.files] + [{"kind": "text", "source": t} for t in args.text]
    result: dict = {"model_id": enc.bundle.model_id, "providers": enc.providers, "shape": list(emb.shape),
                    "rows": rows, "out": args.out}
    if not args.out:
        result["embeddings"] = emb.tolist()
    return result


def print_embed(result: dict) -> None:
    n, d = result["shape"]
    if result["out"]:
        print(f"wrote {n} x {d} embeddings to {result['out']} (rows: images first, then texts)")
        return
    for row, vec in zip(result["rows"], result["embeddings"]):
        head = " ".join(f"{v:+.4f}" for v in vec[:4])
        print(f"{row['kind']:5s} {row['source']}: [{head} ...] (dim {d})")


def cmd_classify(args: argparse.Namespace) -> dict:
    labels = [s.strip() for s in args.labels.split(",")]
    if not all(labels):
        raise InputError(f"--labels has an empty name: {args.labels!r}")
    enc = _encoder(args)
    ranked = enc.classify(list(args.images), labels, templates=args.templates, top_k=args.top_k)
    return {"model_id": enc.bundle.model_id, "providers": enc.providers, "results": [
        {"image": img, "labels": [{"label": lab, "probability": p} for lab, p in r]}
        for img, r in zip(args.images, ranked)]}


def print_classify(result: dict) -> None:
    for r in result["results"]:
        print(r["image"])
        for item in r["labels"]:
            print(f"  {item['probability']:6.3f}  {item['label']}")


def cmd_doctor(args: argparse.Namespace):
    try:
        from runtime.readiness import format_readiness, readiness_report
    except ImportError as exc:
        raise EdgeclipError(f"doctor needs runtime.readiness, which is not available in this install ({exc})") from None
    report = readiness_report(args.bundle)
    return report, format_readiness


def cmd_recover(args: argparse.Namespace) -> dict:
    from edgeclip.bundle import load_bundle
    from edgeclip.bundle.write import output_path, recover

    out = output_path(args.bundle)
    recover(out)
    return {"bundle": str(out), "model_id": load_bundle(out, verify=True).model_id}


def print_recover(result: dict) -> None:
    print(f"{result['bundle']}: complete bundle of {result['model_id']}, sha256 verified")


COMMANDS = {"info": (cmd_info, print_info), "recover": (cmd_recover, print_recover), "embed": (cmd_embed, print_embed), "classify": (cmd_classify, print_classify),
            "index": (lambda a: photo_cli.cmd_index(a, _encoder), photo_cli.print_index),
            "search": (lambda a: photo_cli.cmd_search(a, _encoder), photo_cli.print_search)}


def run(args: argparse.Namespace) -> None:
    if args.command == "doctor":
        report, fmt = cmd_doctor(args)
        print(json.dumps(report, indent=2, default=str) if args.json else fmt(report))
        return
    compute, show = COMMANDS[args.command]
    result = compute(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        show(result)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `edgeclip` / `python -m edgeclip`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="edgeclip: %(message)s")
    try:
        run(args)
    except EdgeclipError as exc:
        print(f"edgeclip: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except BrokenPipeError:  # e.g. `edgeclip ... | head`: the reader left; nothing more to say
        sys.stderr.close()
        return EXIT_FAIL
    except OSError as exc:
        print(f"edgeclip: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        print("edgeclip: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
