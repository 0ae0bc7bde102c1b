"""edgeclip: MobileCLIP embeddings on phones and small boards, with ONNX Runtime and no PyTorch.

`Encoder`, `PhotoIndex`, `similarity` and `DEFAULT_TEMPLATES` load on first use (PEP 562), so `import edgeclip.errors` or
`import edgeclip.bundle` (what runtime/ and the build side do) does not load ONNX Runtime sessions.
"""

__version__ = "0.1.0"

from edgeclip import errors
from edgeclip.bundle import FORMAT_VERSION, Bundle, load_bundle
from edgeclip.errors import BundleError, EdgeclipError, ImageError, InputError, ProviderError, TextError

__all__ = [
    "FORMAT_VERSION", "Bundle", "BundleError", "DEFAULT_TEMPLATES", "EdgeclipError", "Encoder", "ImageError",
    "InputError", "PhotoIndex", "ProviderError", "TextError", "errors", "load_bundle", "similarity",
]


def __getattr__(name: str):
    """The public names that need the encoder or zero-shot code, imported when first asked for."""
    if name == "Encoder":
        from edgeclip.encoder import Encoder as value
    elif name == "similarity":
        from edgeclip.zeroshot import similarity as value
    elif name == "DEFAULT_TEMPLATES":
        from edgeclip.zeroshot import DEFAULT_TEMPLATES as value
    elif name == "PhotoIndex":
        from edgeclip.index import PhotoIndex as value
    else:
        raise AttributeError(f"module 'edgeclip' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
