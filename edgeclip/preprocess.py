"""Image loading and CLIP preprocessing with Pillow + numpy, equal to torchvision's Resize+CenterCrop+ToTensor.

Modes are turned into RGB as follows: transparent images (LA, La, PA, RGBA, RGBa, P with transparency)
are composited over a white background (BACKGROUND); I;16* and I are read as 16-bit intensities
(0..65535, scaled by 1/257 and rounded); F is read as intensities in [0, 1]; every other mode goes
through Pillow's own RGB conversion.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgeclip.errors import BundleError, ImageError

DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; larger images are refused before their pixels are decoded
BACKGROUND = (255, 255, 255)  # what transparent pixels become

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


def _open_encoded(src: Any, max_pixels: int, what: str) -> Image.Image:
    """Open a path or encoded bytes, check the pixel count from the header, then decode."""
    if isinstance(src, (str, Path)):
        path = Path(src).expanduser()
        if not path.is_file():
            raise ImageError(f"image file not found: {path}")
        data: Any = str(path)
    else:
        data = io.BytesIO(bytes(src))
    try:
        im = Image.open(data)
        _check_pixels(im.size, max_pixels, what)  # header only: nothing decoded yet
        im.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {what} refused by Pillow as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(f"image {what} is not a recognised image format (corrupt or not an image)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"image {what} is corrupt or truncated: {exc}") from None
    return im


def _from_array(arr: np.ndarray, max_pixels: int, what: str) -> Image.Image:
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"image arrays must be HxWx3 uint8 (RGB); got shape {arr.shape} dtype {arr.dtype}")
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


def load_image(src: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a path, encoded bytes, PIL image or HxWx3 uint8 array as an EXIF-upright RGB PIL image."""
    what = _describe(src)
    if isinstance(src, Image.Image):
        _check_pixels(src.size, max_pixels, what)
        im = src
    elif isinstance(src, np.ndarray):
        im = _from_array(src, max_pixels, what)
    elif isinstance(src, (str, Path, bytes, bytearray, memoryview)):
        im = _open_encoded(src, max_pixels, what)
    else:
        raise ImageError(
            f"unsupported image input of type {type(src).__name__}; give a path, bytes, PIL.Image or HxWx3 uint8 array"
        )
    try:
        im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"image {what} has unreadable EXIF orientation data: {exc}") from None
    try:
        return to_rgb(im)
    except (OSError, ValueError) as exc:
        raise ImageError(f"image {what}: cannot convert mode {im.mode!r} to RGB: {exc}") from None


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
    return resize, crop, size, INTERPOLATIONS[interp_name], mean, std


def resize_shortest(im: Image.Image, size: int, interpolation: Image.Resampling) -> Image.Image:
    """Scale so the shorter side is `size`, the longer one int(size * long / short) (torchvision's rule)."""
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return im.resize((new_w, new_h), interpolation)


def center_crop(im: Image.Image, size: int) -> Image.Image:
    """Crop the central size x size square, rounding offsets like torchvision."""
    w, h = im.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def preprocess_image(image: ImageInput, spec: dict, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Turn one image into the tower's float32 [3, S, S] input as the manifest's preprocess spec says."""
    resize, crop, _, interpolation, mean, std = _spec_values(spec)
    im = load_image(image, max_pixels=max_pixels)
    im = center_crop(resize_shortest(im, resize, interpolation), crop)
    x = np.asarray(im, dtype=np.uint8).astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return (x - mean) / std




def is_single_image(images: Any) -> bool:
    """True when `images` is one image (path, bytes, PIL image or HxWx3 array) rather than a collection."""
    if isinstance(images, np.ndarray):
        return images.ndim == 3
    return isinstance(images, (str, Path, bytes, bytearray, memoryview, Image.Image))


__all__ = [
    "BACKGROUND", "DEFAULT_MAX_PIXELS", "INTERPOLATIONS", "center_crop", "is_single_image", "load_image",
    "preprocess_image", "resize_shortest", "to_rgb",
]
