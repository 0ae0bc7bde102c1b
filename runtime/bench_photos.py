"""Real photographs as phone-sized JPEGs, and the fidelity of the "fast" image path against "exact" on them.

The photos are the ones scikit-image and matplotlib ship (no download): skimage.data's astronaut, chelsea,
coffee, rocket, hubble_deep_field, retina, immunohistochemistry, camera, and matplotlib's grace_hopper.jpg.
They are re-encoded at 12, 3 and 1 MP (4:3, Pillow JPEG quality 90) so the real decode path is exercised.

`python -m runtime.bench_photos --bundle DIR [--megapixels 12 3 1] [--json]` prints the cosine of every
photo's fast-mode embedding against its exact-mode one, and the time each mode takes per photo.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from runtime.providers import thread_count

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
                  "immunohistochemistry", "camera")
MEGAPIXEL_SIZES = {12: (4000, 3000), 3: (2000, 1500), 1: (1152, 864)}


def source_photos() -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 array of every shipped photo (scikit-image and matplotlib must be installed)."""
    import matplotlib
    import skimage.data
    from PIL import Image

    photos = {}
    for name in SKIMAGE_PHOTOS:
        arr = getattr(skimage.data, name)()
        photos[name] = np.dstack([arr] * 3) if arr.ndim == 2 else arr[..., :3]
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(hopper) as im:
        photos["grace_hopper"] = np.asarray(im.convert("RGB"))
    return photos


def _variants(photos: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """Every photo, then mirrored, then mirrored upside down, ... (distinct files for long runs)."""
    kinds = ("", "-mirror", "-flip", "-mirror-flip")
    round_ = 0
    while True:
        kind = kinds[round_ % len(kinds)]
        for name, arr in photos.items():
            out = arr[:, ::-1] if "mirror" in kind else arr
            out = out[::-1] if "flip" in kind else out
            yield f"{name}{kind}-{round_}", out
        round_ += 1


def write_photo_jpegs(folder: Path, megapixels: int = 12, count: Optional[int] = None,
                      quality: int = 90) -> list[Path]:
    """Write `count` (default: one per photo) JPEGs of `megapixels` MP (12, 3 or 1) into folder; their paths.

    Each is a photo (or a mirrored copy) resized with Lanczos to the 4:3 size, portrait photos turned upright
    by an EXIF orientation tag so the decode path meets one too. Existing files are reused.
    """
    from PIL import Image

    size = MEGAPIXEL_SIZES[megapixels]
    folder.mkdir(parents=True, exist_ok=True)
    photos = source_photos()
    count = len(photos) if count is None else count
    paths = []
    for i, (name, arr) in zip(range(count), _variants(photos)):
        path = folder / f"{i:04d}-{name}-{megapixels}mp.jpg"
        if not path.exists():
            im = Image.fromarray(np.ascontiguousarray(arr)).resize(size, Image.Resampling.LANCZOS)
            exif = Image.Exif()
            if i % 3 == 2:  # stored sideways with an orientation tag, as phones do
                im = im.transpose(Image.Transpose.ROTATE_90)
                exif[0x0112] = 6
            tmp = path.with_suffix(".tmp")
            im.save(tmp, format="JPEG", quality=quality, exif=exif)
            tmp.replace(path)
        paths.append(path)
    return paths


def fast_vs_exact(bundle: Path, paths: Sequence[Path], threads: Optional[int] = None) -> dict:
    """Embed every file in both modes with one image-only Encoder; cosine per file and ms per file per mode."""
    from edgeclip.encoder import Encoder

    enc = Encoder(bundle, providers="cpu", threads=threads, towers="image")
    emb, ms = {}, {}
    for mode in ("exact", "fast"):
        enc.preprocess_mode = mode
        t = time.perf_counter()
        emb[mode] = np.concatenate([enc.encode_image(p) for p in paths])
        ms[mode] = 1e3 * (time.perf_counter() - t) / len(paths)
    cos = (emb["fast"] * emb["exact"]).sum(axis=1)
    return {"n": len(paths), "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
            "worst": Path(paths[int(cos.argmin())]).name, "ms_per_image": ms}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: fidelity and speed of the fast image path against the exact one on real photos."""
    ap = argparse.ArgumentParser(prog="python -m runtime.bench_photos", description=__doc__.split("\n\n")[0],
                                 epilog="Exit codes: 0 ok, 1 error, 2 usage error.")
    ap.add_argument("--bundle", type=Path, required=True, metavar="DIR", help="bundle with an image tower")
    ap.add_argument("--photos", type=Path, default=Path("bench-photos"), metavar="DIR",
                    help="where the re-encoded JPEGs are written (reused when present; default ./bench-photos)")
    ap.add_argument("--megapixels", type=int, nargs="+", choices=sorted(MEGAPIXEL_SIZES), default=[12, 3, 1])
    ap.add_argument("--threads", type=thread_count, default=None, metavar="N")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    from edgeclip.errors import EdgeclipError

    try:
        result = {f"{mp}mp": fast_vs_exact(args.bundle, write_photo_jpegs(args.photos / f"{mp}mp", mp), args.threads)
                  for mp in args.megapixels}
    except (EdgeclipError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, r in result.items():
            print(f"{key}: {r['n']} photos, cosine fast vs exact mean {r['cos_mean']:.6f} min {r['cos_min']:.6f} "
                  f"({r['worst']}); ms/image exact {r['ms_per_image']['exact']:.1f}, fast {r['ms_per_image']['fast']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
