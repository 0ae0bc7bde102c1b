"""Import helpers from ``onnxruntime.tools`` without dragging torch in.

``onnxruntime/tools/__init__.py`` imports torch whenever it is installed (for a
PyTorch export helper we never use); the device side must stay torch-free, so
the import is done with torch hidden from ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from edgeclip.errors import EdgeclipError


def import_ort_tool(name: str) -> ModuleType:
    """Return ``onnxruntime.tools.<name>``, importing it with torch masked out."""
    full_name = f"onnxruntime.tools.{name}"
    if full_name in sys.modules:
        return sys.modules[full_name]
    masked = "torch" not in sys.modules
    if masked:
        sys.modules["torch"] = None  # type: ignore[assignment]  # find_spec("torch") -> None
    try:
        return importlib.import_module(f"onnxruntime.tools.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != "onnx":
            raise
        raise EdgeclipError(f"{full_name} needs the `onnx` package: pip install onnx") from None
    finally:
        if masked:
            sys.modules.pop("torch", None)
