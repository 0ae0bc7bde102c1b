"""Atomic file output shared by every tool of the project: write to a temp file beside the target, then rename."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union


@contextmanager
def atomic_path(path: Union[str, Path], mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path in `path`'s folder to write to; on success it gets `mode` and replaces `path`
    (a reader never sees a half-written file), on any exception it is removed and `path` is untouched."""
    path = Path(path).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
