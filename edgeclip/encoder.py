"""`Encoder`: images and texts to L2-normalized MobileCLIP embeddings with ONNX Runtime, no torch."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from edgeclip.bundle import Bundle, load_bundle
from edgeclip.errors import BundleError, EdgeclipError, ImageError, InputError, TextError
from edgeclip.preprocess import DEFAULT_MAX_PIXELS, MODES, is_single_image, preprocess_image, resolve_mode
from edgeclip.stream import Batch, OnError, check_stream_args, default_workers, stream_batches
from edgeclip.zeroshot import DEFAULT_LOGIT_SCALE, LabelBank, l2_normalize, similarity
from edgeclip import zeroshot
from runtime.providers import resolve_providers
from runtime.session import create_session, run_batched
from runtime.graph_contract import check_tower_graph

log = logging.getLogger("edgeclip")


class _Tower:
    """One ONNX tower: its session, tensor names and, for fixed-shape graphs, the batch it must be fed."""

    def __init__(self, bundle: Bundle, name: str, providers: Any, threads: Optional[int], prefer_ort: bool = False,
                 graph_cache: bool = False):
        spec = bundle.towers[name]
        batch = spec.get("batch", "dynamic")
        self.name = name
        self.fixed_batch = batch if isinstance(batch, int) and not isinstance(batch, bool) else None
        if self.fixed_batch is not None and self.fixed_batch < 1:
            raise BundleError(f"{name} tower: batch must be 'dynamic' or a positive integer, got {batch!r}")
        path = (prefer_ort and bundle.ort_path(name)) or bundle.tower_path(name)
        self.session, self.providers = create_session(path, providers, threads, fixed_shape=self.fixed_batch is not None,
                                                      precision=spec.get("precision"), cache=graph_cache)
        check_tower_graph(bundle, name, self.session)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise BundleError(f"{name} tower: the graph must have one input and an output, not {len(inputs)} inputs")
        want_in = spec["inputs"][0].get("name", inputs[0].name)
        want_out = (spec.get("outputs") or [{}])[0].get("name", outputs[0].name)
        if inputs[0].name != want_in:
            raise BundleError(f"{name} tower: graph inputs {[i.name for i in inputs]} do not match the manifest's {want_in!r}")
        if want_out not in [o.name for o in outputs]:
            raise BundleError(f"{name} tower: graph has no output {want_out!r} named in the manifest")
        self.input_name, self.output_name = want_in, want_out
        self.input_shape = list(inputs[0].shape)
        self.output_dim = outputs[[o.name for o in outputs].index(want_out)].shape[-1]
        graph_batch = self.static_dim(0)
        if self.fixed_batch is not None and graph_batch not in (None, self.fixed_batch):
            raise BundleError(f"{name} tower: manifest says batch {self.fixed_batch}, the graph takes {graph_batch}")
        if self.fixed_batch is None and graph_batch is not None:
            log.warning("%s tower: the graph has a fixed batch of %d though the manifest says %r; padding to it",
                        name, graph_batch, batch)
            self.fixed_batch = graph_batch

    def static_dim(self, axis: int) -> Optional[int]:
        dim = self.input_shape[axis] if len(self.input_shape) > axis else None
        return dim if isinstance(dim, int) else None

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the graph on [N, ...]; fixed-batch graphs get zero-padded chunks and the padding is dropped."""
        return run_batched(self.session, self.input_name, self.output_name, x, self.fixed_batch, f"{self.name} tower")


def _select_towers(bundle: Bundle, towers: Union[None, str, Sequence[str]]) -> list[str]:
    """The towers to load: all of the bundle's (None), or those named, each of which the bundle must have."""
    if towers is None:
        return list(bundle.towers)
    names = [towers] if isinstance(towers, str) else list(towers)
    if not names or any(not isinstance(n, str) for n in names):
        raise InputError(f"towers must be 'image', 'text' or a list of them, got {towers!r}")
    for name in names:
        if name not in bundle.towers:
            raise BundleError(f"bundle {bundle.root} has no {name} tower (it has: {', '.join(bundle.towers)})")
    return list(dict.fromkeys(names))


def _image_items(images: Any) -> Iterable[Any]:
    """One image as a 1-item list; a 4-D array as its images; any other iterable as it is."""
    if is_single_image(images):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return images
        raise ImageError(f"an image array must be HxWx3 or NxHxWx3 uint8; got shape {images.shape} dtype {images.dtype}")
    if isinstance(images, (dict, set, frozenset)) or not hasattr(images, "__iter__"):
        raise ImageError(f"unsupported image input of type {type(images).__name__}; give an image or an iterable of them")
    return images


def _checked_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TextError(f"a text must be a string, not {type(text).__name__}: {text!r:.60}")
    return text


class Encoder:
    """Embeds images and texts with a bundle's ONNX towers; thread-safe; outputs float32 [N, D], unit norm.

    `bundle`: a bundle folder, a loaded Bundle, or `hf-hub:ORG/REPO[@REVISION]` (fetched into the Hugging Face
    cache and hash-checked like a folder; docs/hub.md).
    `providers`: "auto", a short name (cpu, xnnpack, nnapi), an ONNX Runtime provider name, or a list of
    these in priority order. `threads`: ONNX Runtime intra-op threads (None: ORT's default).
    `verify`: True checks each file's sha256, re-hashing only files changed since they were last verified
    (edgeclip.bundle.verify_cache); "full" re-hashes every file; False skips the check.
    `prefer_ort`: run the towers' `.ort` alternates where the bundle lists them (minimal ORT builds).
    `towers`: None (default) serves every tower the bundle has, each opened on first use (the tokenizer with the
    first text), so an encoder used only for images never loads the text graph or the tokenizer; naming towers
    ("image", "text" or both) serves only those and opens them now. `graph_cache`: on the CPU provider, load
    each graph's pre-optimized form (runtime.graph_cache, saved on first use). `preprocess_mode`: "fast" or
    "exact" (default: the bundle's preprocess "mode", else edgeclip.preprocess.DEFAULT_MODE). `workers`: image decode threads of the
    streaming path (default edgeclip.stream.default_workers()). Empty input lists give a [0, D] array.
    """

    def __init__(
        self,
        bundle: Union[str, Path, Bundle],
        providers: Union[str, Sequence[str]] = "auto",
        threads: Optional[int] = None,
        *,
        verify: Union[bool, str] = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tokenizer_backend: str = "auto",
        prefer_ort: bool = False,
        towers: Union[None, str, Sequence[str]] = None,
        preprocess_mode: Optional[str] = None,
        workers: Optional[int] = None,
        graph_cache: bool = True,
    ):
        if preprocess_mode is not None and preprocess_mode not in MODES:
            raise InputError(f"preprocess_mode must be one of {', '.join(MODES)} or None, got {preprocess_mode!r}")
        check_stream_args(1, "raise", workers)
        # a bad provider or thread count fails here, before the bundle is hashed, not at first use
        resolve_providers(providers, fixed_shape=True, threads=threads)
        self.bundle = load_bundle(bundle, verify=verify)
        self.max_pixels = max_pixels
        self.workers = default_workers() if workers is None else workers
        self.towers = _select_towers(self.bundle, towers)
        self._open_args = (providers, threads, prefer_ort, graph_cache)
        self._towers: dict[str, _Tower] = {}
        self._tokenizer = None
        self._tokenizer_backend = tokenizer_backend
        self._open_lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self._tokenize_lock = threading.Lock()
        self.preprocess_mode = resolve_mode(preprocess_mode, self.bundle.preprocess) if "image" in self.towers else None
        self._labels = LabelBank(self.encode_text)
        if towers is not None:  # named towers open now, the text tower after its tokenizer (see _run_texts)
            _ = self.tokenizer
            for name in self.towers:
                self._tower(name)

    def _open(self, name: str) -> _Tower:
        """Open tower `name` and check it against the manifest (crop size, context length)."""
        tower = _Tower(self.bundle, name, *self._open_args)
        if name == "image":
            size = self.bundle.preprocess.get("crop_size", self.bundle.preprocess.get("size"))
            want = tower.static_dim(3)
            if want is not None and size is not None and int(size) != want:
                raise BundleError(f"image tower expects {want}x{want} inputs but preprocess crops to {size}")
        else:
            ctx = self.bundle.context_length
            graph_ctx = tower.static_dim(1)
            if graph_ctx is not None and graph_ctx != ctx:
                raise BundleError(f"text tower takes {graph_ctx} tokens but the manifest's tokenizer says {ctx}")
        return tower

    def _load_tokenizer(self):
        """The bundle's CLIP tokenizer (imported lazily: image-only users never load `tokenizers`)."""
        from edgeclip.tokenizer import load_tokenizer, tokenizer_json_path

        backend = self._tokenizer_backend
        path = self.bundle.tokenizer_path
        if path is None:
            path = tokenizer_json_path()
            log.info("bundle names no tokenizer.json; using the CLIP tokenizer shipped with edgeclip (%s)", path)
        try:
            return load_tokenizer(path, context_length=self.bundle.context_length, backend=backend)
        except EdgeclipError:
            raise
        except (OSError, ValueError, ImportError) as exc:
            raise BundleError(f"cannot load tokenizer {path}: {exc}") from None

    @property
    def manifest(self) -> dict:
        return self.bundle.manifest

    @property
    def providers(self) -> list[str]:
        """Providers the sessions opened so far actually run with (union over towers, in priority order)."""
        seen: list[str] = []
        for tower in self._towers.values():
            seen += [p for p in tower.providers if p not in seen]
        return seen

    @property
    def tower_providers(self) -> dict[str, list[str]]:
        """tower -> providers its session runs with, for the towers opened so far."""
        return {name: list(t.providers) for name, t in self._towers.items()}

    @property
    def embed_dim(self) -> int:
        """D, as the graphs give it (a tower is opened for this when none is open yet)."""
        return self._dim(next(iter(self._towers), self.towers[0]))

    def _dim(self, name: str) -> int:
        """D as tower `name` gives it (opened if need be, which checks the manifest's embed_dim against its graph)."""
        return int(self.bundle.embed_dim or self._tower(name).output_dim)

    @property
    def logit_scale(self) -> float:
        return float(self.manifest.get("logit_scale") or DEFAULT_LOGIT_SCALE)

    @property
    def tokenizer(self):
        """The CLIP tokenizer, loaded on first use; None when this encoder serves no text tower."""
        if self._tokenizer is None and "text" in self.towers:
            with self._tokenizer_lock:
                if self._tokenizer is None:
                    self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _served(self, name: str) -> None:
        """Raise unless this encoder serves tower `name`."""
        if name not in self.towers:
            if name in self.bundle.towers:
                raise InputError(f"this Encoder was made with towers={self.towers}; pass towers including "
                                 f"{name!r} to embed with the bundle's {name} tower")
            raise BundleError(f"bundle {self.bundle.root} has no {name} tower (it has: {', '.join(self.towers)})")

    def _tower(self, name: str) -> _Tower:
        """Tower `name`, opened on first use (once, whatever the number of threads asking)."""
        tower = self._towers.get(name)
        if tower is not None:
            return tower
        self._served(name)
        with self._open_lock:
            if name not in self._towers:
                self._towers[name] = self._open(name)
        return self._towers[name]

    def _open_ahead(self, name: str) -> None:
        """On first use, start opening tower `name` in a thread while the caller decodes its input (Pillow and
        ONNX Runtime release the GIL, so the two overlap); the caller's _tower(name) then waits for it. Not for
        text: loading the tokenizer holds the GIL, and the two load peaks would add up for nothing."""
        self._served(name)
        if name not in self._towers:
            threading.Thread(target=self._open_quietly, args=(name,), daemon=True).start()

    def _open_quietly(self, name: str) -> None:
        try:
            self._tower(name)
        except Exception:  # noqa: BLE001 - the caller's own _tower(name) opens it again and raises the error
            pass

    def preprocess(self, image: Any) -> np.ndarray:
        """One image -> the image tower's float32 [3, S, S] input (this encoder's mode and pixel limit)."""
        return preprocess_image(image, self.bundle.preprocess, max_pixels=self.max_pixels, mode=self.preprocess_mode)

    def embed_preprocessed(self, rows: Union[list, np.ndarray]) -> np.ndarray:
        """Embed images already preprocessed (Encoder.preprocess): [N, 3, S, S] float32 -> [N, D], unit norm."""
        return l2_normalize(self._tower("image").run(np.stack(rows)))

    def _run_texts(self, rows: list) -> np.ndarray:
        # Tokenizer first, then the text tower: memory the tokenizer's loading frees is then reused by the session
        # (S0 INT8, text only: peak 142 -> 129 MB in the other order).
        ids = self.tokenize(rows)
        return l2_normalize(self._tower("text").run(ids))

    def embed_images(self, images: Iterable[Any], batch_size: int = 8, *, on_error: OnError = "raise",
                     workers: Optional[int] = None, with_index: bool = False) -> Iterator[Batch]:
        """Stream embeddings of any iterable of images: a generator of float32 [B, D] batches in input order.

        Decoding runs in `workers` threads (default: the Encoder's) overlapping inference, reading the input
        a bounded distance ahead. `on_error`: "raise", "skip" or callable(index, item, error); with
        `with_index` each batch is (input positions int64 [B], embeddings [B, D]). See edgeclip.stream.
        """
        self._open_ahead("image")
        workers = self.workers if workers is None else workers
        check_stream_args(batch_size, on_error, workers)
        return stream_batches(_image_items(images), self.preprocess, self.embed_preprocessed, batch_size, on_error,
                              workers, with_index)

    def embed_texts(self, texts: Iterable[str], batch_size: int = 64, *, on_error: OnError = "raise",
                    with_index: bool = False) -> Iterator[Batch]:
        """Stream embeddings of any iterable of strings: a generator of float32 [B, D] batches in input order.

        A non-string item is a TextError, handled as `on_error` says; `with_index` as in embed_images.
        """
        self._served("text")
        check_stream_args(batch_size, on_error)
        items = [texts] if isinstance(texts, str) else texts
        if not hasattr(items, "__iter__") or isinstance(items, (dict, set, frozenset, bytes)):
            raise TextError(f"texts must be a string or an iterable of strings, got {type(texts).__name__}")
        return stream_batches(items, _checked_text, self._run_texts, batch_size, on_error, 0, with_index)

    def encode_image(self, images: Any, batch_size: int = 8) -> np.ndarray:
        """Embed one image or a list (paths, bytes, PIL images, HxWx3 uint8 arrays) -> float32 [N, D]."""
        self._open_ahead("image")
        check_stream_args(batch_size, "raise")
        if is_single_image(images):
            return self.embed_preprocessed([self.preprocess(images)])
        few = isinstance(images, (list, tuple)) and len(images) <= 1  # no decode threads for one image
        parts = list(self.embed_images(images, batch_size, workers=0 if few else None))
        return np.concatenate(parts) if parts else np.zeros((0, self._dim("image")), dtype=np.float32)

    def tokenize(self, texts: Union[str, Sequence[str]]) -> np.ndarray:
        """Token ids int64 [N, context_length] (pad 0, eot 49407; long texts cut to the context)."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            self._tower("text")  # raises: this encoder has no text tower
        items = [texts] if isinstance(texts, str) else texts
        if not isinstance(items, (list, tuple)):
            raise TextError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        for i, t in enumerate(items):
            if not isinstance(t, str):
                raise TextError(f"text {i} is a {type(t).__name__}, not a string: {t!r:.60}")
        with self._tokenize_lock:
            return np.asarray(tokenizer(list(items)), dtype=np.int64).reshape(len(items), -1)

    def encode_text(self, texts: Union[str, Sequence[str]], batch_size: int = 64) -> np.ndarray:
        """Embed one string or a list -> float32 [N, D]; "" is embedded as CLIP does, endless text is truncated."""
        self._served("text")
        check_stream_args(batch_size, "raise")
        if isinstance(texts, str):
            return self._run_texts([texts])
        if not isinstance(texts, (list, tuple)):
            raise TextError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        parts = list(self.embed_texts(texts, batch_size))
        return np.concatenate(parts) if parts else np.zeros((0, self._dim("text")), dtype=np.float32)

    def label_embeddings(self, labels: Sequence[str], templates: Optional[Sequence[str]] = None) -> np.ndarray:
        """Normalized [L, D] label embeddings averaged over templates; cached per (labels, templates)."""
        return self._labels.get(labels, templates)

    def classify(self, images: Any, labels: Sequence[str], templates: Optional[Sequence[str]] = None,
                 top_k: Optional[int] = None) -> list:
        """Zero-shot classification; see edgeclip.zeroshot.classify."""
        return zeroshot.classify(self, images, labels, templates=templates, top_k=top_k)

    similarity = staticmethod(similarity)

    def __repr__(self) -> str:
        return f"Encoder({self.bundle.model_id!r}, towers={self.towers}, opened={list(self._towers)})"


__all__ = ["Encoder"]
