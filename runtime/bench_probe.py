"""Child process of the benchmark: cold start and peak memory of a fresh `edgeclip.Encoder`.

Run as `python -m runtime.bench_probe --bundle DIR --provider NAME --image JPG [--towers image|text|both]`;
prints one JSON line.
Kept free of heavy imports so that the timed import is what a user's first `import edgeclip` costs.
"""
import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux/Android: VmHWM from /proc (ru_maxrss would also count the parent's RSS at fork time, because
    the kernel carries it across exec). Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv=None) -> int:
    """Measure import, session creation and first embeddings; print them as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--provider", required=True)
    ap.add_argument("--image", required=True, help="JPEG file for the first image embedding")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--towers", choices=("image", "text", "both"), default="both",
                    help="image or text: Encoder(towers=...) opens that tower at once, the other never; both "
                    "(default): the default Encoder, which opens each tower on first use (first image, then text)")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    from edgeclip import Encoder

    out = {"import_s": time.perf_counter() - t, "rss_after_import_mb": _rss_mb()}
    t = time.perf_counter()
    # "both" is the default Encoder: each tower opens on first use. A named tower opens in Encoder(...).
    towers = None if args.towers == "both" else args.towers
    enc = Encoder(args.bundle, providers=[args.provider], threads=args.threads, towers=towers)
    out["session_s"] = time.perf_counter() - t
    out["peak_rss_encoder_mb"] = _rss_mb()
    if "image" in enc.towers:
        t = time.perf_counter()
        enc.encode_image([args.image])
        out["first_image_s"] = time.perf_counter() - t
        out["process_to_first_embedding_s"] = time.perf_counter() - _T0
        out["peak_rss_first_image_mb"] = _rss_mb()
    if "text" in enc.towers:
        t = time.perf_counter()
        enc.encode_text(["a photo of a dog"])
        out["first_text_s"] = time.perf_counter() - t
        out.setdefault("process_to_first_embedding_s", time.perf_counter() - _T0)
    first = out.get("first_image_s", out.get("first_text_s", 0.0))
    out["cold_start_s"] = out["import_s"] + out["session_s"] + first
    if len(enc.towers) == 2:
        out["cold_start_image_and_text_s"] = out["cold_start_s"] + out["first_text_s"]
    out["peak_rss_mb"] = _rss_mb()
    out["providers"] = list(enc.providers)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
