"""Atomic file output shared by every tool of the project: write to a temp file beside the target, then rename."""
from __future__ import annotations

import os
import shutil
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


@contextmanager
def atomic_dir(path: Union[str, Path], exist_ok: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder beside `path` to fill; on success it becomes `path` (a reader sees no folder or the
    complete one) with the umask's permissions, like `mkdir`; on any exception it is removed.

    If `path` exists by then (another process finished first), the temp folder is dropped when `exist_ok`, else
    FileExistsError is raised."""
    import secrets  # not at module level: it loads OpenSSL's libcrypto (3.6 MB RSS), which starting an Encoder avoids

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.mkdir()  # not mkdtemp: that makes 0700 whatever the umask
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        try:
            os.rename(tmp, path)  # refuses a non-empty `path`
        except OSError:
            if not (exist_ok and path.is_dir()):
                raise FileExistsError(f"{path} exists") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Union[str, Path], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large towers do not sit in memory."""
    import hashlib  # only when hashing: see atomic_dir

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
