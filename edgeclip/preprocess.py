"""Image loading and CLIP preprocessing with Pillow + numpy, in two modes.

- "exact": equal to torchvision's Resize+CenterCrop+ToTensor(+Normalize): the whole image is decoded,
  resized so its short side is `resize`, then center-cropped.
- "fast": JPEGs are decoded at reduced scale in the DCT domain (Pillow's draft(), keeping at least twice the
  resize target), and only the region the center crop keeps is resampled, straight to the crop size.

Both modes bound the work: `max_pixels` counts the pixels actually decoded, and the resized intermediate
never exceeds MAX_INTERMEDIATE_PIXELS (for extreme aspect ratios "exact" then resamples the kept region only).

Modes are turned into RGB as follows: transparent images (LA, La, PA, RGBA, RGBa, P with transparency)
are composited over a white background (BACKGROUND); I;16* and I are read as 16-bit intensities
(0..65535, scaled by 1/257 and rounded); F is read as intensities in [0, 1]; every other mode goes
through Pillow's own RGB conversion.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgeclip.errors import BundleError, ImageError

DEFAULT_MAX_PIXELS = 24_000_000  # most pixels decoded per image: twice a 12 MP photo ("fast" decodes JPEGs smaller)
MAX_INTERMEDIATE_PIXELS = 4_000_000  # "exact" resizes the whole image only while the result stays this small
BACKGROUND = (255, 255, 255)  # what transparent pixels become
MODES = ("fast", "exact")
DEFAULT_MODE = "fast"
# "fast" decodes JPEGs at 1/2, 1/4 or 1/8 scale keeping at least this many pixels per resized pixel (at 2 the
# DCT's own smoothing adds visibly to the resize filter's; 2.5 keeps a 12 MP photo at 1/4 for a 256 crop).
DRAFT_FACTOR = 2.5
# Formats Pillow may open (multi-picture JPEGs open as JPEG); anything else (EPS/PS would start Ghostscript) is refused.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}
_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_SIXTEEN_BIT = {"I", "I;16", "I;16L", "I;16B", "I;16N"}
_DRAFTABLE = {"JPEG", "MPO"}
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees

ImageInput = Union[str, Path, bytes, bytearray, memoryview, Image.Image, np.ndarray]


def _describe(src: Any) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return f"<{type(src).__name__}>"


def _check_pixels(size: tuple[int, int], max_pixels: int, what: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageError(f"image {what} is empty ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        raise ImageError(
            f"image {what} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
            f"(possible decompression bomb); raise max_pixels if the image is trusted"
        )


def _open_file(src: Any, what: str) -> Image.Image:
    """Open a path or encoded bytes lazily (header only), through ALLOWED_FORMATS."""
    if isinstance(src, (str, Path)):
        path = Path(src).expanduser()
        if path.is_dir():
            raise ImageError(f"image {path} is a directory, not an image file")
        if not path.is_file():
            raise ImageError(f"image file not found: {path}")
        data: Any = str(path)
    else:
        data = io.BytesIO(bytes(src))
    try:
        return Image.open(data, formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {what} refused by Pillow as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"image {what} is not a recognised image format (corrupt, not an image, or a format outside "
            f"{', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"image {what} is corrupt or truncated: {exc}") from None


def _draft(im: Image.Image, min_short: Optional[int]) -> bool:
    """Ask a JPEG to decode at 1/2, 1/4 or 1/8 scale keeping its short side >= min_short; True if it will."""
    w, h = im.size
    if not min_short or im.format not in _DRAFTABLE or min(w, h) < 2 * min_short:
        return False
    short = min(w, h)
    want = (-(-w * min_short // short), -(-h * min_short // short))  # both sides, the short one == min_short
    return bool(im.draft(im.mode, want)) and im.size != (w, h)


def _decode(src: Any, max_pixels: int, what: str,
            min_short: Optional[int] = None) -> tuple[Image.Image, Optional[tuple[int, int]]]:
    """Decode a path or encoded bytes (JPEGs at reduced scale when min_short allows);
    (image, full-resolution size when the image was decoded smaller, else None)."""
    im = _open_file(src, what)
    try:
        header = im.size
        full = header if _draft(im, min_short) else None
        _check_pixels(im.size, max_pixels, what)  # the pixels that will be decoded; nothing decoded yet
        im.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {what} refused by Pillow as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"image {what} is corrupt or truncated: {exc}") from None
    return im, full


def _from_array(arr: np.ndarray, max_pixels: int, what: str) -> Image.Image:
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"image {what}: arrays must be HxWx3 uint8 (RGB); got shape {arr.shape} dtype {arr.dtype}")
    _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, what)
    return Image.fromarray(np.ascontiguousarray(arr))


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    values = np.asarray(im, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8))


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB (transparency over BACKGROUND; 16-bit and float scaled to 8 bits)."""
    if im.mode == "RGB":
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in _ALPHA_MODES:
        rgba = (im.convert("LA") if im.mode == "La" else im).convert("RGBA")  # Pillow has no La -> RGBA
        base = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if im.mode in _SIXTEEN_BIT:
        return _sixteen_bit_to_l(im).convert("RGB")
    if im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def _load(src: ImageInput, max_pixels: int,
          min_short: Optional[int] = None) -> tuple[Image.Image, Optional[tuple[int, int]]]:
    """An EXIF-upright RGB image, and its full-resolution upright size when it was decoded at reduced scale."""
    what = _describe(src)
    full = None
    if isinstance(src, Image.Image):
        _check_pixels(src.size, max_pixels, what)
        im = src
    elif isinstance(src, np.ndarray):
        im = _from_array(src, max_pixels, what)
    elif isinstance(src, (str, Path, bytes, bytearray, memoryview)):
        im, full = _decode(src, max_pixels, what, min_short)
    else:
        raise ImageError(
            f"unsupported image input of type {type(src).__name__}; give a path, bytes, PIL.Image or HxWx3 uint8 array"
        )
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation != 1:  # exif_transpose copies even an upright image; skip it for those
            im = ImageOps.exif_transpose(im)
            if full is not None and orientation in _SWAPS_AXES:
                full = (full[1], full[0])
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image {what} has unreadable EXIF orientation data: {exc}") from None
    try:
        return to_rgb(im), full
    except (OSError, ValueError) as exc:
        raise ImageError(f"image {what}: cannot convert mode {im.mode!r} to RGB: {exc}") from None


def load_image(src: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a path, encoded bytes, PIL image or HxWx3 uint8 array as an EXIF-upright RGB PIL image."""
    return _load(src, max_pixels)[0]


def _spec_values(spec: dict) -> tuple[int, int, int, Image.Resampling, np.ndarray, np.ndarray]:
    """Validate a manifest "preprocess" section; returns (resize, crop, size, interpolation, mean, std)."""
    try:
        size = int(spec["size"])
        resize = int(spec.get("resize", size))
        crop = int(spec.get("crop_size", size))
        mode = spec.get("resize_mode", "shortest")
        interp_name = str(spec.get("interpolation", "bilinear")).lower()
        mean = np.asarray(spec.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(spec.get("std", [1.0, 1.0, 1.0]), dtype=np.float32).reshape(3, 1, 1)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"malformed 'preprocess' section in the manifest: {exc!r}") from None
    if mode != "shortest":
        raise BundleError(f"preprocess resize_mode {mode!r} is not supported (only 'shortest')")
    if spec.get("crop", "center") != "center":
        raise BundleError(f"preprocess crop {spec.get('crop')!r} is not supported (only 'center')")
    if interp_name not in INTERPOLATIONS:
        raise BundleError(f"preprocess interpolation {interp_name!r} unknown; expected one of {sorted(INTERPOLATIONS)}")
    if not 0 < crop <= resize:
        raise BundleError(f"preprocess crop_size {crop} must be between 1 and resize {resize}")
    if np.any(std == 0):
        raise BundleError("preprocess std contains a zero")
    resolve_mode(spec.get("mode"))
    return resize, crop, size, INTERPOLATIONS[interp_name], mean, std


def resolve_mode(mode: Optional[str], spec: Optional[dict] = None) -> str:
    """The preprocessing mode to use: `mode` if given, else the spec's "mode", else DEFAULT_MODE."""
    chosen = mode if mode is not None else (spec or {}).get("mode", DEFAULT_MODE)
    if chosen not in MODES:
        raise BundleError(f"preprocess mode {chosen!r} unknown; expected one of {', '.join(MODES)}")
    return chosen


def resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """torchvision's Resize(size) rule: the shorter side becomes `size`, the longer int(size * long / short)."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def resize_shortest(im: Image.Image, size: int, interpolation: Image.Resampling) -> Image.Image:
    """Scale so the shorter side is `size`, the longer one int(size * long / short) (torchvision's rule)."""
    return im.resize(resized_size(*im.size, size), interpolation)


def _crop_offsets(w: int, h: int, size: int) -> tuple[int, int]:
    return int(round((w - size) / 2.0)), int(round((h - size) / 2.0))


def center_crop(im: Image.Image, size: int) -> Image.Image:
    """Crop the central size x size square, rounding offsets like torchvision."""
    left, top = _crop_offsets(*im.size, size)
    return im.crop((left, top, left + size, top + size))


def crop_box(w: int, h: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    """The region of a w x h image that Resize(resize) + CenterCrop(crop) keeps, in the image's coordinates."""
    nw, nh = resized_size(w, h, resize)
    left, top = _crop_offsets(nw, nh, crop)
    sx, sy = w / nw, h / nh
    return left * sx, top * sy, (left + crop) * sx, (top + crop) * sy


def resize_and_crop(im: Image.Image, resize: int, crop: int, interpolation: Image.Resampling,
                    mode: str = DEFAULT_MODE, full_size: Optional[tuple[int, int]] = None) -> Image.Image:
    """Resize(resize) + CenterCrop(crop) of an RGB image.

    "exact" resizes the whole image then crops (torchvision's result) while the intermediate stays within
    MAX_INTERMEDIATE_PIXELS; otherwise, and always in "fast", only the kept region is resampled, in one step.
    `full_size` is the image's size before a reduced-scale decode (the geometry is computed on it).
    """
    w, h = im.size
    fw, fh = full_size or (w, h)
    nw, nh = resized_size(fw, fh, resize)
    if mode == "exact" and full_size is None and nw * nh <= MAX_INTERMEDIATE_PIXELS:
        return center_crop(im.resize((nw, nh), interpolation), crop)
    x0, y0, x1, y1 = crop_box(fw, fh, resize, crop)
    k = 1 / round(fw / w)  # a JPEG decoded at 1/s scale maps x to x / s (its size is rounded up)
    return im.resize((crop, crop), interpolation, box=(x0 * k, y0 * k, x1 * k, y1 * k))


def _normalizer(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """[3, 256] float32 table: value v of channel c -> (v / 255 - mean[c]) / std[c], computed as ToTensor does."""
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    return (levels[None, :] - mean.reshape(3, 1)) / std.reshape(3, 1)


def to_tensor(im: Image.Image, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """RGB image -> normalized float32 [3, H, W], one float array written once (a per-channel lookup)."""
    arr = np.asarray(im, dtype=np.uint8)
    table = _normalizer(mean, std)
    out = np.empty((3,) + arr.shape[:2], dtype=np.float32)
    for c in range(3):
        np.take(table[c], arr[:, :, c], out=out[c])
    return out


def preprocess_image(image: ImageInput, spec: dict, max_pixels: int = DEFAULT_MAX_PIXELS,
                     mode: Optional[str] = None) -> np.ndarray:
    """Turn one image into the tower's float32 [3, S, S] input as the manifest's preprocess spec says.

    `mode`: "fast" or "exact" (None: the spec's "mode", else DEFAULT_MODE); see the module docstring.
    """
    resize, crop, _, interpolation, mean, std = _spec_values(spec)
    mode = resolve_mode(mode, spec)
    min_short = math.ceil(DRAFT_FACTOR * resize) if mode == "fast" else None
    im, full = _load(image, max_pixels, min_short)
    return to_tensor(resize_and_crop(im, resize, crop, interpolation, mode, full), mean, std)


def is_single_image(images: Any) -> bool:
    """True when `images` is one image (path, bytes, PIL image or HxWx3 array) rather than a collection."""
    if isinstance(images, np.ndarray):
        return images.ndim == 3
    return isinstance(images, (str, Path, bytes, bytearray, memoryview, Image.Image))


__all__ = [
    "ALLOWED_FORMATS", "BACKGROUND", "DEFAULT_MAX_PIXELS", "DEFAULT_MODE", "INTERPOLATIONS", "MAX_INTERMEDIATE_PIXELS",
    "MODES", "center_crop", "crop_box", "is_single_image", "load_image", "preprocess_image", "resize_and_crop",
    "resize_shortest", "resized_size", "resolve_mode", "to_rgb", "to_tensor",
]
