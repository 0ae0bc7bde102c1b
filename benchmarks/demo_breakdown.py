"""Where the demo model errs: colour vs shape accuracy of its zero-shot predictions, on held-out and seen combinations.

    python -m benchmarks.demo_breakdown [--checkpoint PATH] [--json]

Held-out = the eval split (colour-shape combinations never seen in training); seen = the single-object
scenes of the calib split. "shape only" classifies by the shape prompts alone ("a photo of a ring.").
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image


def breakdown(checkpoint: Optional[Path] = None, seen_samples: int = 256) -> dict:
    """Top-1, colour-right, shape-right and shape-only accuracy for held-out and seen combinations."""
    import torch

    from export.models.demo import build_demo_model, torch_encoders
    from export.models.demo_config import DEMO_WEIGHTS
    from quantize import synthetic as S
    from runtime.bench_accuracy import class_embeddings, normalize

    torch.set_num_threads(1)
    encode_image, encode_text = torch_encoders(build_demo_model(checkpoint or DEMO_WEIGHTS))
    names, shapes, templates = S.class_names(), list(S.SHAPES), S.ZERO_SHOT_TEMPLATES

    def prototypes(labels: list[str]) -> np.ndarray:
        prompts = [[t.format(n) for t in templates] for n in labels]
        return class_embeddings(encode_text([p for group in prompts for p in group]), prompts)

    classes, shape_protos = prototypes(names), prototypes(shapes)
    sets = {"held_out": [S.make_sample(0, "eval", i) for i in range(S.DEFAULT_SIZES["eval"])],
            "seen": [(s, sc) for s, sc in (S.make_sample(0, "calib", i) for i in range(seen_samples))
                     if len(sc.objects) == 1]}
    out = {}
    for name, items in sets.items():
        images = [Image.open(io.BytesIO(s.image)).convert("RGB") for s, _ in items]
        truth = [(sc.objects[0].colour, sc.objects[0].shape) for _, sc in items]
        emb = normalize(encode_image(images))
        pred = [names[k].split() for k in (emb @ classes.T).argmax(1)]
        by_shape = [shapes[k] for k in (emb @ shape_protos.T).argmax(1)]
        errors = Counter(f"{c} {s} -> {p[0]} {p[1]}" for (c, s), p in zip(truth, pred) if [c, s] != p)
        out[name] = {"images": len(items),
                     "top1": float(np.mean([[c, s] == p for (c, s), p in zip(truth, pred)])),
                     "colour": float(np.mean([c == p[0] for (c, _), p in zip(truth, pred)])),
                     "shape": float(np.mean([s == p[1] for (_, s), p in zip(truth, pred)])),
                     "shape_only_prompts": float(np.mean([s == b for (_, s), b in zip(truth, by_shape)])),
                     "top_confusions": dict(errors.most_common(8))}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.demo_breakdown", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="demo checkpoint (default: the committed one)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    result = breakdown(args.checkpoint)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name, r in result.items():
        print(f"{name}: {r['images']} images, top-1 {r['top1']:.3f}, colour {r['colour']:.3f}, shape {r['shape']:.3f}, "
              f"shape-only prompts {r['shape_only_prompts']:.3f}")
        for pair, n in r["top_confusions"].items():
            print(f"  {n:3d}  {pair}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
