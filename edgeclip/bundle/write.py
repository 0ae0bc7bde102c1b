"""Write and amend bundles (torch-free; used by export, quantize and runtime tools).

Output policy of `write_bundle` (what `python -m export --out` and `python -m quantize.int8 --out` do):
- a missing folder is created, parents included; folders get the user's umask (like `mkdir`);
- an existing empty folder or edgeclip bundle is replaced. Files the old manifest does not name (a user's
  NOTES.txt, a subfolder of photos) are carried into the new bundle unchanged; if one has the name of a file of
  the new bundle, nothing is written and the error names it;
- any other folder, or a file, is refused with an error naming what is in the way. Nothing we did not write is
  ever deleted.

The swap is recoverable. Every run first creates a journal `.<name>.edgeclip-<token>-<pid>-<host>.journal` beside
the output, which names the temporary folders it may create (`.<name>.tmp-<token>` for the new bundle,
`.<name>.old-<token>` for the bundle it replaces, `.<name>.work-<token>` for an exporter's scratch files). If the process is killed, the
next run for the same output finds the journal of a dead process and finishes the swap (once the new bundle was
complete and verified) or undoes it, then removes those folders: only folders a journal names are touched.

install_file/write_manifest add derived files (ORT-format graphs, e2e graphs, operator configs) to an existing
bundle atomically.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator, Mapping, Optional, Union

from edgeclip.bundle.read import (FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, Bundle, load_bundle, sha256_file,
                                  write_journals)
from edgeclip.errors import BundleError
from edgeclip.files import atomic_path

PathLike = Union[str, Path]
log = logging.getLogger("edgeclip")
# The policy in one sentence, for the --out help of every command that writes a bundle.
OUTPUT_POLICY = ("missing parent folders are created; an existing edgeclip bundle there is replaced, keeping every "
                 "file its manifest does not name (your notes, photos, ...); a non-empty folder that is not a bundle, "
                 "or a file, is refused; a write cut short (killed) is finished or undone by the next run")


def _fill_hashes(node: object, hashes: Mapping[str, str], used: set) -> None:
    """Set `sha256` on every manifest dict whose `file` is one of the bundle's files."""
    if isinstance(node, dict):
        name = node.get("file")
        if isinstance(name, str) and name in hashes:
            node["sha256"] = hashes[name]
            used.add(name)
        for key, value in node.items():
            if key != "source_checkpoint":  # describes a file outside the bundle
                _fill_hashes(value, hashes, used)
    elif isinstance(node, list):
        for value in node:
            _fill_hashes(value, hashes, used)


def _safe_name(name: str) -> str:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts or "\\" in name or name == MANIFEST_NAME:
        raise BundleError(f"bundle file name {name!r} is not allowed")
    return name


# ---- the output folder ------------------------------------------------------------------------------------------

def output_path(out_dir: PathLike) -> Path:
    """`out_dir` made absolute (its parent's symlinks resolved, not a symlink itself)."""
    path = Path(out_dir).expanduser()
    if not path.name or path.name in (".", ".."):
        raise BundleError(f"--out {out_dir!r} does not name a folder")
    path = path.absolute()
    return path.parent.resolve() / path.name


def _bundle_manifest(folder: Path) -> Optional[dict]:
    """The manifest of an edgeclip bundle in `folder`, or None when the folder holds no such manifest."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME else None


def _named(manifest: dict) -> set[str]:
    """Files a bundle's manifest names, the manifest included (the files edgeclip wrote there)."""
    try:
        return {MANIFEST_NAME, *(name for name, _ in Bundle(Path("."), manifest).files())}
    except (AttributeError, KeyError, TypeError):  # a malformed manifest names nothing we can trust
        return {MANIFEST_NAME}


def _files_under(folder: Path) -> list[str]:
    """Every file (or symlink) below `folder`, as POSIX paths relative to it, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        out += [(rel / n).as_posix() for n in filenames]
        out += [(rel / n).as_posix() for n in dirnames if (Path(dirpath) / n).is_symlink()]
    return sorted(out)


def _in_the_way(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return shown


def user_files(out: Path) -> list[str]:
    """Files in the folder at `out` that a new bundle must carry over (anything its manifest does not name).

    Raises BundleError when `out` is a file, a symlink, or a non-empty folder that is not an edgeclip bundle."""
    if out.is_symlink():
        raise BundleError(f"{out} is a symlink; give the folder it points to as the output")
    if not out.exists():
        return []
    if not out.is_dir():
        raise BundleError(f"{out} is a file, not a bundle folder; refusing to replace it")
    if not any(out.iterdir()):
        return []
    manifest = _bundle_manifest(out)
    if manifest is None:
        raise BundleError(f"{out} is not empty and not an edgeclip bundle (it holds {_in_the_way(out)}); "
                          "refusing to write there: choose another --out or an empty folder")
    named = _named(manifest)
    return [f for f in _files_under(out) if f not in named]


def check_output(out_dir: PathLike, new_files: Optional[Mapping[str, object]] = None) -> Path:
    """Refuse early an output `write_bundle` would refuse (call before long work); returns the absolute path."""
    out = output_path(out_dir)
    kept = user_files(out)
    clash = sorted(set(kept) & set(new_files or ()))
    if clash:
        raise BundleError(f"{out} holds {', '.join(clash)}, which is not from the bundle there but has the name of a "
                          "file of the new bundle; move it away first (nothing was written)")
    return out


# ---- journal: which temporary folders a run made, so the next run can finish or undo its swap ------------------

def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


class _Journal:
    """An empty file `.<name>.edgeclip-<token>-<pid>-<host>.journal` beside the output: this run (process `pid` on
    `host`) may have made `.<name>.tmp-<token>` (the new bundle), `.<name>.old-<token>` (the bundle it replaces) and
    `.<name>.work-<token>` (scratch files). An empty `.<name>.edgeclip-<token>.ready` says the new bundle is
    complete and verified. Both are created in one step, so a kill leaves them whole or absent."""

    def __init__(self, out: Path):
        self.out, self.token = out, secrets.token_hex(4)
        self.path = out.parent / f".{out.name}.edgeclip-{self.token}-{os.getpid()}-{_host()}.journal"
        self.ready_path = out.parent / f".{out.name}.edgeclip-{self.token}.ready"
        try:
            self.path.touch(exist_ok=False)
        except OSError as exc:
            raise BundleError(f"cannot write beside {out}: {exc}") from None

    def folder(self, role: str) -> Path:
        return self.out.parent / f".{self.out.name}.{role}-{self.token}"

    def mark_ready(self) -> None:
        self.ready_path.touch(exist_ok=False)

    def close(self) -> None:
        self.ready_path.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _same_entry(a: Path, b: Path) -> bool:
    """`b` is the copy `_carry` made of `a`: the same symlink, or a regular file of the same size."""
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    return b.is_file() and a.is_file() and a.stat().st_size == b.stat().st_size


def _remove_ours(folder: Path, keep_if_in: Optional[Path] = None) -> None:
    """Delete a replaced bundle: the files its manifest names, plus files that `keep_if_in` holds too (copies of
    the user's files we carried over). Anything else stays, and the folder with it."""
    if not folder.exists():
        return
    manifest = _bundle_manifest(folder)
    named = _named(manifest) if manifest else {MANIFEST_NAME}
    for rel in _files_under(folder):
        path = folder / rel
        if rel in named or (keep_if_in is not None and _same_entry(path, keep_if_in / rel)):
            path.unlink()
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            log.warning("kept %s: it holds files edgeclip did not write", dirpath)


def recover(out_dir: PathLike) -> None:
    """Finish or undo the swap of a killed run writing `out_dir`, and remove the temporary folders its journal names.

    Journals of live processes (another run still writing) and of other hosts are left alone."""
    out = output_path(out_dir)
    if not out.parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{out.name}.edgeclip-") + r"([0-9a-f]{8})-(\d+)-([0-9a-f]{8})\.journal")
    for path in write_journals(out):
        match = pattern.fullmatch(path.name)
        if not match or match.group(3) != _host() or _alive(int(match.group(2))):
            continue
        token = match.group(1)
        stage, old, work = (out.parent / f".{out.name}.{role}-{token}" for role in ("tmp", "old", "work"))
        ready = out.parent / f".{out.name}.edgeclip-{token}.ready"
        if ready.exists() and stage.is_dir():  # the new bundle was complete and verified: finish the swap
            if out.exists() and not old.exists():
                os.replace(out, old)
            if not out.exists():
                os.replace(stage, out)
        elif old.is_dir() and not out.exists():
            os.replace(old, out)
        if stage.is_dir():
            shutil.rmtree(stage)  # an unfinished new bundle: only files that run copied there
        _remove_ours(old, keep_if_in=out)
        if work.is_dir():
            shutil.rmtree(work)
        ready.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        log.info("finished an interrupted write of %s and removed its temporary files", out)


@contextmanager
def work_dir(out_dir: PathLike) -> Iterator[Path]:
    """A scratch folder beside `out_dir` (parents created) for files a bundle is built from; removed on exit, and
    by the next run if this process is killed."""
    out = output_path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    journal = _Journal(out)
    work = journal.folder("work")
    try:
        work.mkdir()
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        journal.close()


# ---- writing ----------------------------------------------------------------------------------------------------

def _carry(out: Path, stage: Path, kept: list[str]) -> None:
    """Copy the user's files from the bundle being replaced into the new one (hard links when possible)."""
    for rel in kept:
        src, dest = out / rel, stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest)
            continue
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)


def write_bundle(out_dir: PathLike, manifest: dict, files: Mapping[str, PathLike]) -> Path:
    """Write `files` (bundle name -> source path) and `manifest` into `out_dir` atomically; return `out_dir`.

    sha256 fields are filled for every manifest entry naming one of `files`; files named nowhere else
    are listed under `extra_files`. The staged bundle is verified with `edgeclip.load_bundle` before the swap.
    See the module docstring for what happens to an existing `out_dir`.
    """
    for name in files:
        _safe_name(name)
    out = output_path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)
    kept = user_files(check_output(out, files))
    journal = _Journal(out)
    stage, old = journal.folder("tmp"), journal.folder("old")
    try:
        stage.mkdir()
        hashes = {}
        for name, src in files.items():
            dest = stage / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dest)
            except OSError as exc:
                raise BundleError(f"cannot copy {src} into the bundle as {name}: {exc}") from None
            hashes[name] = sha256_file(dest)
        full = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **copy.deepcopy(manifest)}
        used: set = set()
        _fill_hashes(full, hashes, used)
        extra = {**(full.get("extra_files") or {}), **{n: h for n, h in hashes.items() if n not in used}}
        full["extra_files"] = extra or {}
        (stage / MANIFEST_NAME).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        load_bundle(stage, verify=True)
        _carry(out, stage, kept)
        journal.mark_ready()
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
    except BaseException:
        if old.exists() and not out.exists():  # failed between the renames: put the old bundle back
            os.replace(old, out)
        shutil.rmtree(stage, ignore_errors=True)
        journal.close()
        raise
    _remove_ours(old, keep_if_in=out)
    journal.close()
    return out


def install_file(src: Path, root: Path, name: str) -> str:
    """Move ``src`` to ``root/name`` with ``os.replace`` (same filesystem); return its sha256."""
    digest = sha256_file(src)
    os.replace(src, root / name)
    return digest


def write_manifest(root: Path, manifest: dict) -> None:
    """Rewrite ``root/manifest.json`` atomically (temp file in the bundle, then rename)."""
    path = root / MANIFEST_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
