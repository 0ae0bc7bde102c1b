"""DataCompDR-12M reinforcement metadata joined with DataComp-12M's URLs and captions.

Both Hugging Face datasets are webdataset tar shards named ``00000000.tar``, ``00000001.tar``, ...
with the same UIDs per shard. ``apple/DataCompDR-12M`` holds per UID ``url.txt``, ``syn.json``,
``paug.json``, ``npz`` (teacher embeddings) and ``json`` (with ``uid``), no images;
``mlfoundations/DataComp-12M`` holds the original caption (``txt``) and the URL with ``json``
metadata (``uid``, ``original_width``/``original_height``). Files are read through huggingface_hub:
the local HF cache first (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``), the Hub when it is reachable.
A DataCompDR shard is streamed from its start (a shard is gigabytes, a calibration set needs its
first few hundred samples); a DataComp-12M shard (tens of MB) is downloaded into the HF cache.
"""

from __future__ import annotations

import io
import json
import tarfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from quantize.errors import QuantizeError
from quantize.shards import ReinforcedSample, ShardError

DR_REPO = "apple/DataCompDR-12M"
URL_REPO = "mlfoundations/DataComp-12M"
SOURCE_NAME = "datacompdr-12m"


class DataUnavailable(QuantizeError):
    """A dataset file is neither in the local Hugging Face cache nor reachable on the Hub."""


def shard_file(index: int) -> str:
    """The file name of shard ``index`` in both datasets."""
    return f"{index:08d}.tar"


@dataclass
class Candidate:
    """One DataCompDR sample with its URL and original caption, before its image is fetched."""

    uid: str
    url: str
    caption: str
    syn_captions: list[str]
    param_aug: list
    image_emb: np.ndarray
    text_emb: np.ndarray
    original_size: tuple[int, int] | None  # (width, height) of the image DataComp downloaded
    shard: str

    def sample(self, image: bytes, ext: str) -> ReinforcedSample:
        """The reinforced sample this candidate becomes once its image is in hand."""
        return ReinforcedSample(key=self.uid, image=image, image_ext=ext, caption=self.caption,
                                syn_captions=self.syn_captions, param_aug=self.param_aug,
                                image_emb=self.image_emb, text_emb=self.text_emb, url=self.url)


def tar_groups(fileobj: BinaryIO) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Read a webdataset tar as a stream; yield ``(key, {suffix: payload})`` per run of members sharing a key."""
    key, group = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            stem, dot, suffix = member.name.rsplit("/", 1)[-1].partition(".")
            if not member.isfile() or not dot:
                continue
            if group and stem != key:
                yield key, group
                group = {}
            key = stem
            group[suffix] = tar.extractfile(member).read()
    if group:
        yield key, group


def _json(group: dict[str, bytes], suffix: str) -> dict:
    try:
        value = json.loads(group[suffix]) if suffix in group else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(group: dict[str, bytes], suffix: str) -> str:
    return group.get(suffix, b"").decode("utf-8", "replace").strip()


def url_table(fileobj: BinaryIO) -> dict[str, tuple[str, str, tuple[int, int] | None]]:
    """``uid -> (url, caption, original (width, height) or None)`` from one DataComp-12M shard."""
    table = {}
    for key, group in tar_groups(fileobj):
        meta = _json(group, "json")
        uid = str(meta.get("uid") or key)
        url = _text(group, "url.txt") or str(meta.get("url") or "")
        caption = _text(group, "txt") or str(meta.get("caption") or meta.get("text") or "")
        w, h = meta.get("original_width"), meta.get("original_height")
        size = (int(w), int(h)) if isinstance(w, (int, float)) and isinstance(h, (int, float)) else None
        table[uid] = (url, caption, size)
    return table


def _decode_reinforcement(group: dict[str, bytes]) -> tuple[list[str], list, np.ndarray, np.ndarray]:
    """Synthetic captions, stored augmentations and teacher embeddings of one DataCompDR sample."""
    syn = _json(group, "syn.json").get("syn_text")
    paug = _json(group, "paug.json").get("param_aug")
    if isinstance(paug, str):  # the Hub copy stores the list as a JSON string
        paug = json.loads(paug)
    if "npz" not in group:
        raise ValueError("no npz teacher embeddings")
    with np.load(io.BytesIO(group["npz"]), allow_pickle=False) as npz:
        image_emb = np.asarray(npz["image_emb"], dtype=np.float32)
        text_emb = np.asarray(npz["text_emb"], dtype=np.float32)
    if not isinstance(syn, list) or not isinstance(paug, list):
        raise ValueError("syn.json or paug.json lacks its list")
    return syn, paug, image_emb, text_emb


def join_shard(dr_stream: BinaryIO, urls: dict, shard: str, dropped: dict[str, int]) -> Iterator[Candidate]:
    """DataCompDR samples of one shard, in order, with URL and caption; unusable ones are counted in ``dropped``."""
    for key, group in tar_groups(dr_stream):
        uid = str(_json(group, "json").get("uid") or key)
        url, caption, size = urls.get(uid, ("", "", None))
        url = url or _text(group, "url.txt")
        if not url or not caption:
            dropped["no url or caption in DataComp-12M"] = dropped.get("no url or caption in DataComp-12M", 0) + 1
            continue
        try:
            syn, paug, image_emb, text_emb = _decode_reinforcement(group)
            cand = Candidate(uid, url, caption, syn, paug, image_emb, text_emb, size, shard)
            cand.sample(b"\0", "jpg").validate()  # shapes and key, before any download
        except (ValueError, KeyError, OSError, ShardError):
            dropped["malformed reinforcement metadata"] = dropped.get("malformed reinforcement metadata", 0) + 1
            continue
        yield cand


class HubDataset:
    """Files of one Hugging Face dataset repo at one revision, from the local cache or the Hub."""

    def __init__(self, repo: str, online: bool, revision: str = "main"):
        self.repo, self.online, self.revision = repo, online, revision
        self.commit: str | None = None

    def _remember(self, path: str, filename: str) -> Path:
        """Pin the commit the first file came from (snapshots/<commit>/<filename>) for every later file."""
        p = Path(path)
        if self.commit is None:
            self.commit = p.parents[len(Path(filename).parts) - 1].name
        return p

    def download(self, filename: str) -> Path | None:
        """The file in the HF cache (downloaded first when online); None when the repo has no such file."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            path = hf_hub_download(self.repo, filename, repo_type="dataset", revision=self.commit or self.revision,
                                   local_files_only=not self.online)
        except EntryNotFoundError:
            return None
        except LocalEntryNotFoundError as exc:
            raise DataUnavailable(f"{self.repo}/{filename} is not in the Hugging Face cache and the Hub is not "
                                  "reachable") from exc
        return self._remember(path, filename)

    @contextmanager
    def stream(self, filename: str) -> Iterator[BinaryIO | None]:
        """The file opened for sequential reading (cache first, else streamed from the Hub); None if absent."""
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.repo, filename, revision=self.commit or self.revision,
                                        repo_type="dataset")
        if isinstance(cached, str):
            self._remember(cached, filename)
            with open(cached, "rb") as fh:
                yield fh
            return
        if not self.online:
            raise DataUnavailable(f"{self.repo}/{filename} is not in the Hugging Face cache and the Hub is not "
                                  "reachable")
        from huggingface_hub import HfApi, HfFileSystem
        from huggingface_hub.errors import EntryNotFoundError

        if self.commit is None:
            self.commit = HfApi().dataset_info(self.repo, revision=self.revision).sha
        # block_size=0: one sequential GET, read as far as needed (no range requests, no local copy)
        with HfFileSystem().open(f"datasets/{self.repo}@{self.commit}/{filename}", "rb", block_size=0) as fh:
            try:
                fh.read(0)  # opens the connection: a missing file shows here
            except EntryNotFoundError:
                yield None
                return
            yield fh


def iter_candidates(dr: HubDataset, urls: HubDataset, dropped: dict[str, int], first_shard: int = 0
                    ) -> Iterator[Candidate]:
    """Joined candidates from shard ``first_shard`` on, in dataset order, until the shards run out."""
    index = first_shard
    while True:
        name = shard_file(index)
        try:
            url_path = urls.download(name)
        except DataUnavailable:
            if index == first_shard or urls.online:
                raise
            return  # offline: the cached shards are all there is
        if url_path is None:
            return
        with open(url_path, "rb") as fh:
            table = url_table(fh)
        with dr.stream(name) as stream:
            if stream is None:
                return
            yield from join_shard(stream, table, name, dropped)
        index += 1
