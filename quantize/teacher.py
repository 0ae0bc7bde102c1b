"""Teacher embeddings stored as `pth.gz` in reinforced shards: torch pickles, read only on the build side."""
from __future__ import annotations

import gzip
import importlib.util
import io
from typing import Optional

import numpy as np

from edgeclip.shards import PthLoader


def load_pth_gz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a gzipped `torch.save` dict (tensors only: `weights_only`); ValueError if it is not one."""
    import torch

    try:
        obj = torch.load(io.BytesIO(gzip.decompress(data)), map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for a bad pickle; all mean "malformed"
        raise ValueError("unreadable pth.gz") from None
    if not isinstance(obj, dict):
        raise ValueError("pth.gz does not hold a dict")
    return {k: np.asarray(v.float().numpy() if hasattr(v, "numpy") else v, dtype=np.float32) for k, v in obj.items()}


def pth_loader() -> Optional[PthLoader]:
    """`load_pth_gz` when torch is installed, else None (the shard reader then notes the skipped embeddings)."""
    return load_pth_gz if importlib.util.find_spec("torch") is not None else None
