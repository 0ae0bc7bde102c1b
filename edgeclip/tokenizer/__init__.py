"""CLIP BPE tokenizer, identical to OpenCLIP's SimpleTokenizer, with an HF `tokenizers` and a pure-Python backend.

    from edgeclip.tokenizer import load_tokenizer
    ids = load_tokenizer()(["a photo of a cat"])   # np.int64 [1, 77]: 49406, ..., 49407, 0, ...
"""
from edgeclip.tokenizer.api import ClipTokenizer, load_tokenizer
from edgeclip.tokenizer.constants import CONTEXT_LENGTH, EOT_ID, PAD_ID, SOT_ID
from edgeclip.tokenizer.errors import TokenizerError, TokenizerInputError
from edgeclip.tokenizer.tokenizer_file import tokenizer_json_path

__all__ = [
    "CONTEXT_LENGTH", "ClipTokenizer", "EOT_ID", "PAD_ID", "SOT_ID", "TokenizerError", "TokenizerInputError",
    "load_tokenizer", "tokenizer_json_path",
]
