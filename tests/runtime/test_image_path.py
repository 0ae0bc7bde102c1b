"""The image path: fast and exact modes, the format allow-list, clear errors, and memory bounded for any
image it accepts (extreme aspect ratios included), measured in fresh processes."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeclip.errors import BundleError, ImageError, InputError
from edgeclip.preprocess import DEFAULT_MODE, load_image, preprocess_image, resize_shortest, center_crop

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"size": 224, "resize": 256, "interpolation": "bilinear", "crop_size": 224,
        "mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]}


def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A textured picture: gradients and noise drawn at 1/8 size, enlarged (cheap even at 12 MP)."""
    sw, sh = max(w // 8, 1), max(h // 8, 1)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:sh, 0:sw]
    base = np.stack([x * 255 / max(sw - 1, 1), y * 255 / max(sh - 1, 1), (x + y) % 13 * 19.0], axis=-1)
    small = np.clip(base + rng.normal(0, 25, (sh, sw, 3)), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def test_exact_mode_is_the_whole_resize_then_crop():
    data = jpeg(photo(1200, 900, 1))
    im = load_image(data)
    mean, std = np.float32(SPEC["mean"]).reshape(3, 1, 1), np.float32(SPEC["std"]).reshape(3, 1, 1)
    ref = center_crop(resize_shortest(im, 256, Image.Resampling.BILINEAR), 224)
    ref = (np.asarray(ref).astype(np.float32).transpose(2, 0, 1) / np.float32(255.0) - mean) / std
    assert np.array_equal(preprocess_image(data, SPEC, mode="exact"), ref)


@pytest.mark.parametrize("w,h,exif", [(4000, 3000, 1), (3000, 4000, 1), (4000, 3000, 6), (1500, 1000, 8)])
def test_fast_mode_keeps_the_geometry_of_exact(w, h, exif):
    """Decoded at reduced scale, cropped the same region: the tensors differ only by resampling detail."""
    tags = Image.Exif()
    tags[0x0112] = exif
    data = jpeg(photo(w, h, 2), exif=tags)
    fast, exact = preprocess_image(data, SPEC, mode="fast"), preprocess_image(data, SPEC, mode="exact")
    assert fast.shape == exact.shape == (3, 224, 224)
    assert np.abs(fast - exact).mean() < 0.02  # a shifted or mirrored crop would differ by ~0.5


def test_mode_comes_from_the_argument_then_the_spec_then_the_default():
    data = jpeg(photo(2000, 1500, 3))
    exact = preprocess_image(data, SPEC, mode="exact")
    assert np.array_equal(preprocess_image(data, dict(SPEC, mode="exact")), exact)
    assert np.array_equal(preprocess_image(data, SPEC), preprocess_image(data, SPEC, mode=DEFAULT_MODE))
    with pytest.raises(BundleError, match="mode 'quick'"):
        preprocess_image(data, dict(SPEC, mode="quick"))


def test_encoder_mode_is_selectable(bundles):
    from edgeclip import Encoder

    data = jpeg(photo(2400, 1800, 4))
    fast = Encoder(bundles["image_only"], providers="cpu", threads=1, preprocess_mode="fast")
    exact = Encoder(bundles["image_only"], providers="cpu", threads=1, preprocess_mode="exact")
    assert (fast.preprocess_mode, exact.preprocess_mode) == ("fast", "exact")
    spec = fast.bundle.preprocess
    assert np.array_equal(exact.preprocess(data), preprocess_image(data, spec, mode="exact"))
    assert np.array_equal(fast.preprocess(data), preprocess_image(data, spec, mode="fast"))
    with pytest.raises(InputError, match="preprocess_mode"):
        Encoder(bundles["image_only"], providers="cpu", preprocess_mode="turbo")


def test_eps_and_other_formats_outside_the_allow_list_are_refused():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    with pytest.raises(ImageError, match="not a recognised image format.*JPEG, PNG"):
        load_image(eps)
    buf = io.BytesIO()
    Image.fromarray(photo(8, 8)).save(buf, format="ICO")
    with pytest.raises(ImageError, match="not a recognised image format"):
        load_image(buf.getvalue())


def test_a_directory_is_named_as_a_directory(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_the_cli_names_the_position_in_the_whole_input(bundles, tmp_path, capsys):
    from edgeclip.cli import main

    files = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(photo(20, 20, i)).save(path)
        files.append(str(path))
    Path(files[10]).write_bytes(b"broken")
    assert main(["embed", str(bundles["image_only"]), *files, "--batch-size", "4"]) == 1
    assert "item 10:" in capsys.readouterr().err


PROBE = textwrap.dedent("""
    import io, json, sys
    from PIL import Image
    from edgeclip.errors import ImageError
    from edgeclip.preprocess import preprocess_image
    path, mode = sys.argv[1], sys.argv[2]
    spec = {"size": 256, "resize": 256, "interpolation": "bicubic", "crop_size": 256}
    try:
        out = list(preprocess_image(path, spec, mode=mode).shape)
    except ImageError as exc:
        out = "ImageError: " + str(exc)
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
    print(json.dumps({"result": out, "peak_mb": peak}))
""")


def _peak(path: Path, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path), mode], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
def test_any_accepted_image_peaks_within_twice_a_12_mp_photo(tmp_path):
    """Tiny files with extreme aspect ratios used to be resized whole (40000x1: 1.7 GB; 200000x1: MemoryError)."""
    photo_path = tmp_path / "phone.jpg"
    Image.fromarray(photo(4000, 3000, 5)).save(photo_path, quality=90)
    cases = {"wide": (40_000, 1), "wider": (200_000, 1), "tall": (1, 200_000), "strip": (60_000, 3)}
    for name, size in cases.items():
        Image.new("RGB", size, (30, 140, 200)).save(tmp_path / f"{name}.png")
    big = tmp_path / "big.png"
    Image.new("RGB", (6000, 4000), (1, 2, 3)).save(big)  # 24 M decoded pixels: the default limit
    for mode in ("fast", "exact"):
        baseline = _peak(photo_path, mode)
        assert baseline["result"] == [3, 256, 256]
        for name in cases:
            got = _peak(tmp_path / f"{name}.png", mode)
            assert got["result"] == [3, 256, 256], (name, mode, got)
            assert got["peak_mb"] <= 2 * baseline["peak_mb"], (name, mode, got, baseline)
    exact_photo = _peak(photo_path, "exact")["peak_mb"]
    assert _peak(big, "fast")["peak_mb"] <= 2 * exact_photo


def test_the_pixel_limit_counts_decoded_pixels():
    data = jpeg(photo(4000, 3000, 6))
    with pytest.raises(ImageError, match="over the limit"):
        preprocess_image(data, SPEC, max_pixels=4_000_000, mode="exact")  # decoded whole: 12 M pixels
    assert preprocess_image(data, SPEC, max_pixels=4_000_000, mode="fast").shape == (3, 224, 224)  # 1/4 scale
