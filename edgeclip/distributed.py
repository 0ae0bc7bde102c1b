"""Bulk embedding on a Ray cluster with Ray Data (optional extra `edgeclip[ray]`; ray is imported lazily).

`embed(paths_or_dataset, bundle)` reads the images as a Ray Dataset and runs `map_batches` over a pool of
actors, each holding one `Encoder` whose ONNX Runtime threads match the CPUs Ray gave it; a file that cannot
be read becomes an error row, a worker that dies is restarted and its batch retried. `write_embeddings`
writes Parquet (path, embedding, error, size, mtime_ns, bundle identity) atomically, and
`edgeclip index --import DIR` merges it into a device index. Command: `python -m edgeclip.distributed --help`.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from edgeclip.errors import EdgeclipError, InputError
from edgeclip.files import atomic_dir
from edgeclip.index import BundleMismatchError, bundle_identity, embed_stream, scan_images

DEFAULT_BATCH = 64
DEFAULT_RETRIES = 3  # restarts of a dead actor, and retries of the batch it was running
COLUMNS = ("path", "embedding", "error", "size", "mtime_ns", "bundle")


INSTALL_HINT = "pip install 'ray[data]' (from a clone: pip install -e '.[ray]')"


def _ray() -> Any:
    """The ray module, imported on first use, or an error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EdgeclipError(f"bulk embedding needs Ray Data: {INSTALL_HINT}") from None
    return ray


def _pyarrow() -> Any:
    """pyarrow (with its parquet module), imported on first use, or an error saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise EdgeclipError(f"reading and writing embedding Parquet files needs pyarrow: {INSTALL_HINT}") from None
    return pyarrow


def _stat(path: str) -> tuple[Optional[int], Optional[int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


class EmbedBatch:
    """The Ray Data actor: one Encoder per actor; a batch of paths (or path + bytes rows) in, Parquet-ready rows out."""

    def __init__(self, bundle: str, providers: Any = "cpu", threads: Optional[int] = None):
        from edgeclip.encoder import Encoder

        if threads is None:  # as many ONNX Runtime threads as CPUs Ray reserved for this actor
            ray = _ray()
            threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        self.encoder = Encoder(bundle, providers=providers, threads=threads, towers="image")
        self.identity = bundle_identity(self.encoder.bundle)
        self.dim = self.encoder.embed_dim

    def __call__(self, batch: Any) -> Any:
        paths = [str(p) for p in batch.column("path").to_pylist()]
        if "bytes" in batch.column_names:
            items = batch.column("bytes").to_pylist()
            stats = [(len(b) if b is not None else None, None) for b in items]
        else:
            items, stats = paths, [_stat(p) for p in paths]
        results = [(v, e) for _, v, e in embed_stream(self.encoder, items, batch_size=max(1, len(items)))]
        return self.table(paths, stats, results)

    def table(self, paths: Sequence[str], stats: Sequence[tuple], results: Sequence[tuple]) -> Any:
        """The output rows as a pyarrow Table: embedding is a nullable fixed-size list of float32."""
        pa = _pyarrow()
        ok = np.array([v is not None for v, _ in results], dtype=bool)
        flat = np.zeros((len(paths), self.dim), dtype=np.float32)
        if ok.any():
            flat[ok] = np.stack([v for v, _ in results if v is not None])
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), self.dim, mask=pa.array(~ok))
        return pa.table({
            "path": pa.array(paths, pa.string()), "embedding": embedding,
            "error": pa.array([e for _, e in results], pa.string()),
            "size": pa.array([s for s, _ in stats], pa.int64()), "mtime_ns": pa.array([m for _, m in stats], pa.int64()),
            "bundle": pa.array([self.identity] * len(paths), pa.string()),
        })


def embed(paths_or_dataset: Union[Sequence[str], Any], bundle: Union[str, Path], *, batch_size: int = DEFAULT_BATCH,
          workers: Optional[int] = None, cpus_per_worker: float = 1, providers: Any = "cpu",
          threads: Optional[int] = None, max_retries: int = DEFAULT_RETRIES, actor_class: type = EmbedBatch) -> Any:
    """A lazy Ray Dataset of embedding rows (COLUMNS) for image paths, or for a Ray Dataset with a "path"
    column (and optionally "bytes", as from ray.data.read_binary_files(..., include_paths=True)).

    `workers` actors (default: the cluster's CPUs / cpus_per_worker) each run one Encoder with `threads`
    ONNX Runtime threads (default: its CPUs). A dead actor is restarted up to max_retries times and its batch
    retried. Ray must be initialised (ray.init) or it starts a local instance."""
    ray = _ray()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    bundle = str(Path(bundle).expanduser().resolve())
    if isinstance(paths_or_dataset, (str, Path)):
        raise InputError("give a list of image paths (or a Ray Dataset), not a single string")
    if isinstance(paths_or_dataset, ray.data.Dataset):
        dataset = paths_or_dataset
    else:
        paths = [str(p) for p in paths_or_dataset]
        if not paths:
            raise InputError("no images to embed")
        dataset = ray.data.from_items([{"path": p} for p in paths],
                                      override_num_blocks=max(1, -(-len(paths) // batch_size)))
    if not cpus_per_worker > 0:
        raise InputError(f"cpus_per_worker must be above 0, got {cpus_per_worker!r}")
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    if not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    with warnings.catch_warnings():
        # Ray 2.60 names no parameter for actor restarts yet and warns about passing them as remote args
        warnings.simplefilter("ignore", category=DeprecationWarning)
        return dataset.map_batches(
            actor_class, batch_size=batch_size, batch_format="pyarrow", concurrency=workers, num_cpus=cpus_per_worker,
            fn_constructor_kwargs={"bundle": bundle, "providers": providers, "threads": threads},
            max_restarts=max_retries, max_task_retries=max_retries)


def write_embeddings(dataset: Any, out: Union[str, Path]) -> Path:
    """Run the pipeline and write its Parquet files into `out` (a new folder, renamed into place when complete)."""
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; give a new --out (nothing is overwritten)")
    with atomic_dir(out) as staging:  # a reader sees no folder or the complete one
        dataset.write_parquet(str(staging))
    return out


def parquet_files(folder: Union[str, Path]) -> list[Path]:
    """The .parquet files of an output folder, sorted; InputError if there are none."""
    folder = Path(folder).expanduser()
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise InputError(f"{folder} holds no .parquet files (write them with python -m edgeclip.distributed)")
    return files


def read_embeddings(folder: Union[str, Path]) -> tuple[str, Iterator[dict]]:
    """(bundle identity, rows) of a Parquet output folder; rows are dicts of COLUMNS with float32 embeddings.
    Files from two bundles in one folder are refused."""
    pq = _pyarrow().parquet
    files = parquet_files(folder)
    identities: set = set()
    for f in files:
        table = pq.read_table(f, columns=["bundle"])
        identities.update(v for v in table.column("bundle").unique().to_pylist() if v)
    if len(identities) != 1:
        raise BundleMismatchError(f"{folder}: the Parquet files name {len(identities)} bundles; expected exactly one")

    def rows() -> Iterator[dict]:
        for f in files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=4096, columns=list(COLUMNS)):
                yield from _batch_rows(batch)

    return identities.pop(), rows()


def _batch_rows(batch: Any) -> Iterator[dict]:
    emb = batch.column("embedding")
    dim = emb.type.list_size
    values = emb.values.slice(emb.offset * dim, len(emb) * dim).to_numpy(zero_copy_only=False)
    vectors = np.asarray(values, dtype=np.float32).reshape(len(emb), dim)
    valid = emb.is_valid().to_numpy(zero_copy_only=False)
    data = {c: batch.column(c).to_pylist() for c in COLUMNS if c != "embedding"}
    for i in range(len(emb)):
        yield {**{c: data[c][i] for c in data}, "embedding": vectors[i] if valid[i] else None}


def expand_images(patterns: Sequence[str]) -> list[str]:
    """Absolute image paths from globs (** recursive), folders (their images, recursively) and files; sorted."""
    found: set = set()
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if os.path.isdir(expanded):
            found.update(scan_images([expanded]))
            continue
        matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
        if not matches:
            raise InputError(f"--images {pattern!r} matches no file")
        found.update(os.path.abspath(m) for m in matches)
    return sorted(found)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m edgeclip.distributed`: embed images on Ray and write Parquet; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m edgeclip.distributed", description=(
        "Embed many images on a Ray cluster (Ray Data, a pool of Encoder actors) into Parquet files that "
        "`edgeclip index --import DIR --db FILE` merges into a photo index. Every node must see the bundle "
        "and the images at the same paths."))
    p.add_argument("--bundle", required=True, metavar="DIR", help="the bundle that embeds the images")
    p.add_argument("--images", required=True, nargs="+", metavar="GLOB", help="image files, folders or globs (** recursive)")
    p.add_argument("--out", required=True, metavar="PARQUET_DIR", help="a new folder for the Parquet files")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join ('auto' or ray://host:10001; default: start a local Ray)")
    p.add_argument("--workers", type=int, metavar="N", help="encoder actors (default: cluster CPUs / --cpus-per-worker)")
    p.add_argument("--cpus-per-worker", type=float, default=1, metavar="C", help="CPUs per actor = its ORT threads (default 1)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N", help=f"images per batch (default {DEFAULT_BATCH})")
    p.add_argument("--providers", default="cpu", metavar="P", help="ONNX Runtime providers on the workers (default cpu)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    args = p.parse_args(argv)
    try:
        ray = _ray()
        paths = expand_images(args.images)
        ray.init(address=args.address, include_dashboard=False if args.address is None else None,
                 log_to_driver=False)
        start = time.perf_counter()
        dataset = embed(paths, args.bundle, batch_size=args.batch_size, workers=args.workers,
                        cpus_per_worker=args.cpus_per_worker, providers=args.providers)
        out = write_embeddings(dataset, args.out)
        seconds = time.perf_counter() - start
        pq = _pyarrow().parquet
        tables = [pq.read_table(f, columns=["error"]).column("error") for f in parquet_files(out)]
        rows = sum(len(t) for t in tables)
        errors = rows - sum(t.null_count for t in tables)
    except EdgeclipError as exc:
        print(f"edgeclip.distributed: error: {exc}", file=sys.stderr)
        return 1
    summary = {"out": str(out), "images": len(paths), "rows": rows, "errors": errors,
               "seconds": round(seconds, 2), "images_per_second": round(len(paths) / seconds, 1)}
    print(json.dumps(summary, indent=2) if args.json else
          f"wrote {rows} rows ({summary['errors']} errors) to {out} in {seconds:.1f} s "
          f"({summary['images_per_second']} images/s); merge with: edgeclip index --import {out} --db FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
