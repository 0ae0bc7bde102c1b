"""The exceptions edgeclip raises: one family, each message naming the problem and the fix."""
from __future__ import annotations


class EdgeclipError(Exception):
    """Base class of every error edgeclip raises on purpose (catch this one to catch them all)."""


class BundleError(EdgeclipError):
    """A bundle directory is missing, unreadable, tampered with, truncated or from a newer format."""


class InputError(EdgeclipError, ValueError):
    """An argument given to the API has the wrong type, shape or value."""


class ImageError(InputError):
    """An image cannot be read: corrupt, truncated, too large, or of an unsupported kind."""


class TextError(InputError):
    """A text input is not a string, or labels/templates for zero-shot are malformed."""


class ProviderError(EdgeclipError):
    """An execution provider was requested that this onnxruntime build lacks, or it failed to start."""


# Third-party packages of the build side; a missing one is an installation gap, not a bug.
BUILD_PACKAGES = frozenset({"torch", "torchvision", "timm", "open_clip", "onnx", "onnxscript", "safetensors",
                            "onnxruntime", "tokenizers"})


def missing_build_package(exc: ModuleNotFoundError, command: str, extra: str) -> str:
    """The one-line error a build command prints when `exc` names a build-side package; re-raises anything else."""
    package = (exc.name or "").split(".")[0]
    if package not in BUILD_PACKAGES:
        raise exc
    return (f"{command}: error: this command needs the '{package}' package, which is not installed; "
            f"from a clone: pip install -e '.[{extra}]'")


__all__ = ["EdgeclipError", "BundleError", "InputError", "ImageError", "TextError", "ProviderError",
           "missing_build_package"]
