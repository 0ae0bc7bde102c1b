"""Preprocessing equals torchvision's Resize + CenterCrop + ToTensor (+ Normalize) exactly, for every image kind."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from edgeclip.errors import BundleError, ImageError
from edgeclip.preprocess import BACKGROUND, load_image, preprocess_image

SPEC = {"size": 32, "resize": 32, "resize_mode": "shortest", "interpolation": "bilinear", "crop": "center",
        "crop_size": 32, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


@pytest.fixture(scope="module")
def T():
    """torchvision.transforms, the reference (a build-side dependency; the error tests run without it)."""
    return pytest.importorskip("torchvision.transforms", reason="torchvision (the reference transform) is not installed")


def reference(T, im: Image.Image, spec: dict) -> np.ndarray:
    """torchvision's transform on an RGB PIL image (the project's reference)."""
    tf = T.Compose([
        T.Resize(spec["resize"], interpolation=T.InterpolationMode(spec["interpolation"])),
        T.CenterCrop(spec["crop_size"]),
        T.ToTensor(),
        T.Normalize(spec["mean"], spec["std"]),
    ])
    return tf(im).numpy()


def photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured HxWx3 uint8 picture (gradients + noise), different in every channel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) % 64 * 4], axis=-1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def assert_matches_reference(T, src, spec=SPEC):
    ours = preprocess_image(src, spec, mode="exact")
    ref = reference(T, load_image(src), spec)
    assert ours.dtype == np.float32 and ours.shape == (3, spec["crop_size"], spec["crop_size"])
    assert np.abs(ours - ref).max() == 0.0


@pytest.mark.parametrize("w,h", [(64, 48), (48, 64), (37, 91), (32, 32), (20, 13), (300, 33)])
@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "nearest", "lanczos"])
def test_png_sizes_and_interpolations_match_torchvision(T, w, h, interp):
    assert_matches_reference(T, encode(Image.fromarray(photo(w, h)), "PNG"), dict(SPEC, interpolation=interp))


def test_mean_std_and_resize_larger_than_crop_match_torchvision(T):
    spec = dict(SPEC, resize=40, crop_size=32, mean=[0.48, 0.45, 0.40], std=[0.26, 0.26, 0.27])
    assert_matches_reference(T, Image.fromarray(photo(77, 51)), spec)


def test_jpeg_matches_torchvision(T, tmp_path):
    path = tmp_path / "x.jpg"
    Image.fromarray(photo(80, 60, 1)).save(path, quality=90)
    assert_matches_reference(T, path)
    assert_matches_reference(T, str(path))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(T, fmt):
    arr = photo(40, 20, 2)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(arr), fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    upright = np.asarray(load_image(data))
    assert upright.shape == (40, 20, 3)
    if fmt == "PNG":  # lossless: the pixels are exactly the clockwise rotation
        assert np.array_equal(upright, np.rot90(arr, k=-1))
    assert_matches_reference(T, data)


def test_rgba_composited_on_background(T):
    arr = np.dstack([photo(30, 20, 3), np.zeros((20, 30), np.uint8)])
    arr[:10, :, 3] = 255  # top half opaque, bottom half fully transparent
    rgb = np.asarray(load_image(encode(Image.fromarray(arr), "PNG")))
    assert np.array_equal(rgb[:10], arr[:10, :, :3])
    assert (rgb[10:] == np.array(BACKGROUND, np.uint8)).all()
    assert_matches_reference(T, encode(Image.fromarray(arr), "PNG"))


def test_la_and_transparent_palette_use_background(T):
    la = Image.fromarray(np.dstack([np.full((8, 8), 10, np.uint8), np.zeros((8, 8), np.uint8)]), mode="LA")
    assert (np.asarray(load_image(encode(la, "PNG"))) == np.array(BACKGROUND, np.uint8)).all()
    p = Image.fromarray(photo(24, 24, 4)).convert("P")
    p.info["transparency"] = 0
    assert_matches_reference(T, encode(p, "PNG", transparency=0))


@pytest.mark.parametrize("mode", ["P", "L", "CMYK"])
def test_palette_gray_cmyk_convert_like_pillow(T, mode):
    im = Image.fromarray(photo(50, 35, 5)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    data = encode(im, fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == mode
    assert np.array_equal(np.asarray(load_image(data)), np.asarray(decoded.convert("RGB")))
    assert_matches_reference(T, data)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_scaled_to_eight(T, mode):
    values = (np.arange(40 * 30, dtype=np.uint32).reshape(30, 40) * 55) % 65536
    im = Image.fromarray(values.astype(np.uint16)) if mode == "I;16" else Image.fromarray(values.astype(np.int32), mode="I")
    data = encode(im, "PNG" if mode == "I;16" else "TIFF")  # Pillow writes 16-bit PNG, 32-bit int TIFF
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb = np.asarray(load_image(data))
    expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    assert np.array_equal(rgb, np.dstack([expected] * 3))
    assert_matches_reference(T, data)


def test_float_mode_read_as_unit_interval():
    values = np.linspace(0, 1, 24 * 24, dtype=np.float32).reshape(24, 24)
    rgb = np.asarray(load_image(Image.fromarray(values, mode="F")))
    assert np.array_equal(rgb[..., 0], np.rint(values * 255).astype(np.uint8))


def test_every_input_kind_gives_the_same_tensor(tmp_path):
    arr = photo(45, 33, 6)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    kinds = [path, str(path), path.read_bytes(), bytearray(path.read_bytes()), Image.fromarray(arr), arr]
    outs = [preprocess_image(k, SPEC) for k in kinds]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


def _png_with_size(w: int, h: int) -> bytes:
    """A tiny real PNG whose header claims w x h (body far too short): decoding it would fail."""
    data = bytearray(encode(Image.new("L", (4, 4)), "PNG"))
    ihdr = data[12:29]
    new = ihdr[:4] + struct.pack(">II", w, h) + ihdr[12:]
    data[12:29] = new
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(new)))
    return bytes(data)


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    with pytest.raises(ImageError, match="over the limit"):
        load_image(_png_with_size(9000, 9000))  # 81 M pixels > default 64 M; a decode would say "truncated"
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(_png_with_size(100_000, 100_000))  # Pillow's own guard fires first; still our error
    with pytest.raises(ImageError, match="over the limit"):
        load_image(Image.fromarray(photo(20, 20)), max_pixels=100)
    with pytest.raises(ImageError, match="over the limit"):
        preprocess_image(photo(20, 20), SPEC, max_pixels=399)
    assert load_image(photo(20, 20), max_pixels=400).size == (20, 20)


@pytest.mark.parametrize("bad, message", [
    (b"", "not a recognised image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "corrupt|not a recognised"),
    (np.random.default_rng(0).bytes(500), "not a recognised image"),
])
def test_corrupt_bytes_raise_image_error(bad, message):
    with pytest.raises(ImageError, match=message):
        load_image(bad)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_raise_image_error(tmp_path, fmt):
    data = encode(Image.fromarray(photo(200, 150, 7)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), 42, None])
def test_wrong_arrays_and_types_raise_image_error(bad):
    with pytest.raises(ImageError):
        load_image(bad)


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("change", [{"resize_mode": "squash"}, {"interpolation": "magic"}, {"crop_size": 64},
                                    {"std": [1.0, 0.0, 1.0]}, {"size": None}])
def test_bad_preprocess_spec_is_a_bundle_error(change):
    with pytest.raises(BundleError):
        preprocess_image(photo(10, 10), dict(SPEC, **change))


ALL_MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
             "I", "I;16", "I;16B", "I;16L", "F"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_pillow_mode_becomes_rgb(mode):
    im = Image.fromarray(photo(9, 7, 8)).convert("RGBA").convert(mode) if mode not in ("La", "I;16B", "I;16L") \
        else Image.new(mode, (9, 7))
    out = load_image(im)
    assert out.mode == "RGB" and out.size == (9, 7)


def test_unconvertible_mode_is_an_image_error(monkeypatch):
    im = Image.new("LAB", (4, 4))

    def refuse(self, mode=None, *args, **kwargs):
        raise ValueError(f"conversion from {self.mode} to {mode} not supported")

    monkeypatch.setattr(Image.Image, "convert", refuse)
    with pytest.raises(ImageError, match="cannot convert mode 'LAB' to RGB"):
        load_image(im)
