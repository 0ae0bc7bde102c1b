"""Prove the device side on emulated aarch64: embed test images and captions there and on x86, compare.

Builds (once) the cached arm64 Python of ``setup_env.sh``, stages only ``edgeclip/`` and ``runtime/``
(no export/quantize, no torch), runs ``device_embed.py`` under ``qemu-aarch64-static`` with the
``tokenizers`` backend and with the pure-Python tokenizer, runs the same script on the host, and
requires cosine >= 0.99999 per row and identical token ids.

Usage: python tools/aarch64/run_check.py [--bundle DIR] [--cache DIR] [--json]
Without --bundle the demo bundle is exported (``export.api.export_bundle("demo", ...)``) into the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MIN_COS = 0.99999
CAPTIONS = [
    "a photo of a cat", "A Photo Of A DOG on the beach!", "a diagram of a circuit",
    "two people riding bicycles at sunset, 2024", "don't stop believin'", "price: $19.99 (20% off)",
    "Café au lait", "東京タワーの写真", "&amp; &lt;tag&gt;", "word " * 100,
]


class CheckError(RuntimeError):
    """The emulated environment could not be built or the device run failed."""


def ensure_env(cache: Path) -> Path:
    """Build or reuse the emulated arm64 environment; returns its cache dir."""
    proc = subprocess.run(["bash", str(HERE / "setup_env.sh"), str(cache)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckError(f"setup_env.sh failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def ensure_bundle(bundle: Path | None, cache: Path) -> Path:
    """The given bundle, or the demo bundle exported into the cache (build side, needs torch on the host)."""
    if bundle is not None:
        return bundle
    target = cache / "bundles" / "demo"
    if not (target / "manifest.json").is_file():
        from export.api import export_bundle

        target.parent.mkdir(parents=True, exist_ok=True)
        export_bundle("demo", target)
    return target


def make_images(folder: Path) -> list[Path]:
    """Deterministic test images: two PNG patterns of different sizes and a JPEG."""
    from PIL import Image

    yy, xx = np.mgrid[0:300, 0:400]
    a = np.stack([(xx * 255 // 399), (yy * 255 // 299), ((xx + yy) % 256)], -1).astype(np.uint8)
    rng = np.random.default_rng(0)
    b = (rng.random((257, 193, 3)) * 255).astype(np.uint8)
    paths = [folder / "gradient.png", folder / "noise.png", folder / "gradient.jpg"]
    Image.fromarray(a).save(paths[0])
    Image.fromarray(b).save(paths[1])
    Image.fromarray(a).save(paths[2], quality=90)
    return paths


def stage_app(folder: Path) -> Path:
    """Copy only the device-side packages (edgeclip, runtime) into a folder put on PYTHONPATH."""
    app = folder / "app"
    for pkg in ("edgeclip", "runtime"):
        shutil.copytree(REPO / pkg, app / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return app


def run_embed(python: list[str], env: dict, args: list[str]) -> dict:
    proc = subprocess.run(python + [str(HERE / "device_embed.py"), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CheckError(f"device_embed.py failed under {python[0]} (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(bundle: Path | None = None, cache: Path | None = None) -> dict:
    """Run the comparison for both tokenizer backends; returns a summary with per-backend cosines and times."""
    cache = cache or REPO / ".cache" / "aarch64"
    t0 = time.perf_counter()
    env_dir = ensure_env(cache)
    t_env = time.perf_counter() - t0
    bundle = ensure_bundle(bundle, cache)
    summary: dict = {"bundle": str(bundle), "env_seconds": round(t_env, 1), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = make_images(tmp)
        (tmp / "captions.json").write_text(json.dumps(CAPTIONS, ensure_ascii=False), encoding="utf-8")
        app = stage_app(tmp)
        arm_env = {"PATH": os.environ.get("PATH", ""), "PYTHONHOME": str(env_dir / "root/usr"),
                   "PYTHONPATH": f"{app}{os.pathsep}{env_dir / 'site'}", "PYTHONNOUSERSITE": "1",
                   "EDGECLIP_HOME": str(tmp / "home")}
        arm_python = ["qemu-aarch64-static", "-L", str(env_dir / "root"), str(env_dir / "root/usr/bin/python3.11")]
        host_env = dict(os.environ, PYTHONPATH=str(app))
        for backend in ("hf", "python"):
            common = [str(bundle), str(tmp / "captions.json")]
            t1 = time.perf_counter()
            arm_info = run_embed(arm_python, arm_env, common + [str(tmp / f"arm_{backend}.npz"), *map(str, images), "--backend", backend])
            t_arm = time.perf_counter() - t1
            host_info = run_embed([sys.executable], host_env, common + [str(tmp / f"x86_{backend}.npz"), *map(str, images), "--backend", backend])
            arm, x86 = np.load(tmp / f"arm_{backend}.npz"), np.load(tmp / f"x86_{backend}.npz")
            summary["backends"][backend] = {
                "arm": arm_info, "x86": host_info, "arm_wall_seconds": round(t_arm, 1),
                "image_min_cos": float(np.min(np.sum(arm["image"] * x86["image"], axis=1))),
                "text_min_cos": float(np.min(np.sum(arm["text"] * x86["text"], axis=1))),
                "tokens_equal": bool(np.array_equal(arm["tokens"], x86["tokens"])),
            }
        summary["backends_tokens_equal"] = bool(
            np.array_equal(np.load(tmp / "arm_hf.npz")["tokens"], np.load(tmp / "arm_python.npz")["tokens"]))
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    summary["ok"] = all(b["image_min_cos"] >= MIN_COS and b["text_min_cos"] >= MIN_COS and b["tokens_equal"]
                        and b["arm"]["machine"] == "aarch64" and not b["arm"]["torch_loaded"]
                        for b in summary["backends"].values())
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to test (default: export the demo bundle into the cache)")
    parser.add_argument("--cache", type=Path, help="cache dir (default: <repo>/.cache/aarch64)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    try:
        summary = check(args.bundle, args.cache)
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, b in summary["backends"].items():
            print(f"{name:6s}: image min cos {b['image_min_cos']:.7f}, text min cos {b['text_min_cos']:.7f}, "
                  f"tokens equal {b['tokens_equal']}, arm run {b['arm_wall_seconds']} s "
                  f"(onnxruntime {b['arm']['onnxruntime']} on {b['arm']['machine']})")
        print(f"{'OK' if summary['ok'] else 'FAILED'} in {summary['total_seconds']} s (env {summary['env_seconds']} s)")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
