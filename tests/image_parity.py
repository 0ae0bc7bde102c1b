"""Parity on image files: photos and drawn pictures saved as JPEG/PNG, compared by raw and centered cosine.

Raw cosine alone cannot see a one-pixel shift of a ViT's input (every row keeps ~99.9 % of its direction);
the centered cosine (each side minus its own mean embedding) compares only the part that depends on the
image. The inputs are files decoded and preprocessed with torchvision, as the reference implementations do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from quantize.measure import input_sensitivity as input_fraction  # share of the norm left after centering

RAW_MIN = 0.9999  # min row cosine between our embeddings and the reference's
CENTERED_MIN = 0.999  # ... after subtracting each side's mean embedding
MIN_INPUT_FRACTION = 0.10  # the reference's rows must keep >= 10 % of their norm after centering
# scikit-image's bundled photographs (no download) and matplotlib's sample photo
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def _photos() -> list[tuple[str, np.ndarray]]:
    out = []
    try:
        from skimage import data
    except ImportError:  # the dev extra installs it; drawn pictures still make a parity set without it
        data = None
    for name in SKIMAGE_PHOTOS if data is not None else ():
        out.append((name, getattr(data, name)()))
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            from PIL import Image

            out.append(("grace_hopper", np.asarray(Image.open(f).convert("RGB"))))
    except (ImportError, OSError, ValueError):
        pass
    return out


def _drawn(seed: int) -> list[tuple[str, np.ndarray]]:
    """Pictures with edges at every scale: discs and bars on a gradient, and smoothed color noise."""
    rng = np.random.default_rng(seed)
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    scene = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / 17.0)], -1) * 255
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 60)
        scene[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    scene[:, ::23] = 0
    noise = rng.random((h // 10, w // 10, 3)).repeat(10, 0).repeat(10, 1) * 255
    return [("drawn_scene", scene.astype(np.uint8)), ("drawn_noise", noise.astype(np.uint8))]


def write_image_files(folder: Path, limit: int | None = None, seed: int = 0) -> list[Path]:
    """Write the parity images to `folder` (photos as JPEG, drawn pictures as PNG); the first `limit` of them."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, pixels in (_photos() + _drawn(seed))[:limit]:
        im = Image.fromarray(pixels).convert("RGB")
        path = folder / (f"{name}.png" if name.startswith("drawn") else f"{name}.jpg")
        im.save(path, quality=92) if path.suffix == ".jpg" else im.save(path)
        paths.append(path)
    return paths


def load_image_files(paths: list[Path], size: int) -> np.ndarray:
    """torchvision's inference preprocessing of MobileCLIP: resize shortest side (bilinear), center crop, [0, 1]."""
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
                             transforms.CenterCrop(size), transforms.ToTensor()])
    return np.stack([tf(Image.open(p).convert("RGB")).numpy() for p in paths]).astype(np.float32)


def _row_cosines(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    return (a * e).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(e, axis=1))


def figures(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """min raw cosine, min centered cosine, and the reference's input fraction."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return {"raw": float(_row_cosines(a, e).min()),
            "centered": float(_row_cosines(a - a.mean(0), e - e.mean(0)).min()),
            "input_fraction": input_fraction(e)}


def assert_image_parity(actual: np.ndarray, expected: np.ndarray, what: str) -> dict[str, float]:
    """The reference depends on the input, and ours matches it by raw and centered cosine; returns the figures."""
    f = figures(actual, expected)
    assert len(expected) >= 3, f"{what}: centered cosine needs at least 3 inputs"
    assert f["input_fraction"] >= MIN_INPUT_FRACTION, (
        f"{what}: the weights make the embeddings barely depend on the input ({f['input_fraction']:.4f} of the norm"
        f" < {MIN_INPUT_FRACTION}): the comparison would not see a wrong network")
    assert f["raw"] >= RAW_MIN and f["centered"] >= CENTERED_MIN, (
        f"{what}: min raw cosine {f['raw']:.6f} (need {RAW_MIN}), min centered cosine {f['centered']:.6f} "
        f"(need {CENTERED_MIN})")
    return f


def assert_centered(actual: np.ndarray, expected: np.ndarray, what: str) -> float:
    """Centered cosine >= CENTERED_MIN on a block of >= 2 rows (with 2 rows: the cosine of the row difference)."""
    assert len(expected) >= 2, f"{what}: centering needs at least 2 rows"
    centered = figures(actual, expected)["centered"]
    assert centered >= CENTERED_MIN, f"{what}: min centered cosine {centered:.6f} (need {CENTERED_MIN})"
    return centered


def describe(what: str, f: dict[str, float]) -> str:
    """One report line with the figures."""
    return (f"[parity] {what}: min raw cos {f['raw']:.8f}, min centered cos {f['centered']:.8f}, "
            f"input fraction {f['input_fraction']:.3f}")
