"""Where edgeclip keeps what it generates or downloads (checkpoints, datasets, bundles, benchmark caches)."""
from __future__ import annotations

import os
from pathlib import Path


def edgeclip_home() -> Path:
    """`$EDGECLIP_HOME` if set, else `~/.cache/edgeclip` (`~` expanded)."""
    return Path(os.environ.get("EDGECLIP_HOME") or Path.home() / ".cache" / "edgeclip").expanduser()
