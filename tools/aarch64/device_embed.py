"""Device side of the aarch64 check: embed images and captions with edgeclip, save them to an .npz.

Runs under the emulated arm64 interpreter (and on the host for the x86 reference); needs only
edgeclip + runtime + numpy/pillow/onnxruntime (+ tokenizers for the "hf" backend), never torch.
Usage: python device_embed.py BUNDLE CAPTIONS.json OUT.npz --backend hf|python IMAGE...
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Embed images and captions with an edgeclip bundle (CPU EP, 1 thread).")
    parser.add_argument("bundle")
    parser.add_argument("captions", help="JSON list of captions")
    parser.add_argument("out", help="output .npz (image, text, tokens arrays)")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--backend", choices=["hf", "python"], required=True, help="tokenizer backend")
    args = parser.parse_args(argv)

    import onnxruntime

    from edgeclip import Encoder

    start = time.perf_counter()
    enc = Encoder(args.bundle, providers="cpu", threads=1, tokenizer_backend=args.backend)
    with open(args.captions, encoding="utf-8") as fh:
        captions = json.load(fh)
    image = enc.encode_image(args.images)
    text = enc.encode_text(captions)
    tokens = enc.tokenize(captions)
    np.savez(args.out, image=image, text=text, tokens=tokens)
    info = {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__, "providers": enc.providers,
            "backend": enc.tokenizer.backend, "torch_loaded": "torch" in sys.modules,
            "seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
