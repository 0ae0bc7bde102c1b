"""Bundles by name: `hf-hub:ORG/REPO[@REVISION]` resolves to a bundle folder in the Hugging Face cache.

The manifest is fetched first; then exactly the files it names, from the same commit, into huggingface_hub's
cache (HF_HUB_CACHE / HF_HOME; HF_ENDPOINT for a mirror). With HF_HUB_OFFLINE=1 (or EDGECLIP_OFFLINE=1) only the
cache is read; these variables are read at each call. The caller (`edgeclip.bundle.load_bundle`) verifies every
file's sha256 against the manifest, as for a local folder.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from edgeclip.errors import BundleError

HUB_PREFIX = "hf-hub:"
MANIFEST = "manifest.json"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = ("1", "true", "yes", "on")


class HubError(BundleError):
    """A `hf-hub:` bundle that cannot be resolved: bad name, unknown repo, not cached offline, incomplete."""


def is_hub_ref(value: object) -> bool:
    """True for a `hf-hub:ORG/REPO` bundle name (a str or a Path made from one)."""
    return isinstance(value, (str, Path)) and str(value).startswith(HUB_PREFIX)


def parse_ref(ref: Union[str, Path]) -> tuple[str, Optional[str]]:
    """(repo id, revision or None) of `hf-hub:ORG/REPO[@REVISION]`; HubError naming the input if malformed."""
    body = str(ref)[len(HUB_PREFIX):]
    repo, _, revision = body.partition("@")
    if not _REPO.match(repo) or "--" in repo or ".." in repo or (body.count("@") and not revision):
        raise HubError(f"{ref!s} is not a Hub bundle name; expected hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION")
    return repo, revision or None


def offline() -> bool:
    """HF_HUB_OFFLINE or EDGECLIP_OFFLINE set: resolve from the local cache only (read at call time)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "EDGECLIP_OFFLINE"))


def cache_dir() -> Optional[Path]:
    """The Hub cache huggingface_hub uses: $HF_HUB_CACHE, else $HF_HOME/hub, else its default (None)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise HubError("hf-hub: bundle names need huggingface_hub: pip install huggingface_hub "
                       "(from a clone: pip install -e '.[hub]')") from None
    return huggingface_hub


def _fetch(hub, ref: str, repo: str, filename: str, revision: Optional[str], first: bool) -> Path:
    """One file of the bundle through huggingface_hub, its failures as HubErrors that say what to do."""
    from huggingface_hub import errors

    where = f"{ref} ({'offline: local cache ' + str(cache_dir() or 'default') if offline() else 'Hugging Face Hub'})"
    try:
        return Path(hub.hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir(),
                                        local_files_only=offline(), endpoint=os.environ.get("HF_ENDPOINT") or None))
    except errors.RepositoryNotFoundError:
        raise HubError(f"{where}: no such model repository (or it is private: log in with `hf auth login`)") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{where}: revision {revision!r} does not exist") from None
    except errors.LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: caught first)
        if first:
            raise HubError(f"{where}: the bundle is not in the local cache and cannot be downloaded "
                           "(offline or Hub unreachable); download it once online") from None
        raise HubError(f"{where}: incomplete download, {filename} is not in the local cache; run again online "
                       f"to finish it (or `hf download {repo}`)") from None
    except errors.EntryNotFoundError:
        if first:
            raise HubError(f"{where}: the repository has no {MANIFEST}, so it is not an edgeclip bundle") from None
        raise HubError(f"{where}: {filename} is named in {MANIFEST} but missing from the repository") from None
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise HubError(f"{where}: cannot fetch {filename}: {type(exc).__name__}: {str(exc)[:300]}") from None


def resolve_bundle(ref: Union[str, Path], named_files: Callable[[Path], Iterable[str]]) -> Path:
    """The cached snapshot folder holding the manifest and every file it names (downloaded unless offline).

    `named_files(folder)` checks the fetched manifest and lists the files it names (edgeclip.bundle passes its own).
    """
    repo, revision = parse_ref(ref)
    hub = _hub()
    manifest_path = _fetch(hub, str(ref), repo, MANIFEST, revision, first=True)
    root = manifest_path.parent
    commit = root.name if root.parent.name == "snapshots" else revision  # pin the rest to the manifest's commit
    try:
        names = list(named_files(root))
    except BundleError as exc:
        raise HubError(f"{ref}: {exc}") from None
    for name in names:
        path = _fetch(hub, str(ref), repo, name, commit, first=False)
        if path != root / name:
            raise HubError(f"{ref}: {name} resolved outside the bundle's snapshot folder ({path})")
    return root
