"""Damage a file the way the caches must catch: same size and mtime, other content (only its ctime moves)."""
from __future__ import annotations

import os
from pathlib import Path


def flip_a_byte_keeping_size_and_mtime(path: Path) -> None:
    """Change one byte in the middle of `path`, then put its mtime back."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
