"""Tokenizer errors, part of edgeclip's exception family so callers can catch `EdgeclipError`."""
from __future__ import annotations

from edgeclip.errors import EdgeclipError, TextError


class TokenizerError(EdgeclipError, ValueError):
    """The tokenizer cannot be set up: unreadable or non-CLIP tokenizer.json, unknown backend, bad context length."""


class TokenizerInputError(TextError, TypeError):
    """A text given to the tokenizer is not a string (or the texts are not a string / sequence of strings)."""
