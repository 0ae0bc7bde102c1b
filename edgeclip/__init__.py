"""edgeclip: MobileCLIP embeddings on phones and small boards, with ONNX Runtime and no PyTorch."""

__version__ = "0.1.0"

from edgeclip import errors
from edgeclip.bundle import FORMAT_VERSION, Bundle, load_bundle
from edgeclip.encoder import Encoder
from edgeclip.errors import BundleError, EdgeclipError, ImageError, InputError, ProviderError, TextError
from edgeclip.zeroshot import DEFAULT_TEMPLATES, similarity

__all__ = [
    "FORMAT_VERSION", "Bundle", "BundleError", "DEFAULT_TEMPLATES", "EdgeclipError", "Encoder", "ImageError",
    "InputError", "ProviderError", "TextError", "errors", "load_bundle", "similarity",
]
