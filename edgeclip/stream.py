"""Streaming embeddings: any iterable of images or texts in, [B, D] batches out in input order, memory bounded.

Images are decoded and preprocessed by a small pool of worker threads (Pillow releases the GIL while it
decodes and resamples) while the main thread runs the tower on the previous batch. The source iterable is
read lazily, at most `lookahead` items ahead of what has been yielded, so a generator of a million paths
streams in constant memory.

A bad item is handled as `on_error` says:
- "raise" (default): the error is raised, naming the item's position in the whole input;
- "skip": the item is left out (logged at WARNING);
- a callable `on_error(index, item, error)`: called, then the item is left out.
With `with_index=True` every batch comes as (indices, embeddings): `indices` int64 [B] are the input
positions of the rows, which is how a caller lines rows up with inputs when items are skipped.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from edgeclip.errors import EdgeclipError, InputError

log = logging.getLogger("edgeclip")

OnError = Union[str, Callable[[int, Any, EdgeclipError], Any]]
Batch = Union[np.ndarray, tuple[np.ndarray, np.ndarray]]


def default_workers() -> int:
    """Decode threads: two (one decodes while the other waits on I/O), one on a single-core machine."""
    return 2 if (os.cpu_count() or 1) > 1 else 1


def check_stream_args(batch_size: Any, on_error: Any, workers: Any = None) -> None:
    """Raise InputError for a bad batch_size, on_error or workers (before any item is read)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (on_error in ("raise", "skip") or callable(on_error)):
        raise InputError(f"on_error must be 'raise', 'skip' or a callable(index, item, error), got {on_error!r}")
    cap = 4 * (os.cpu_count() or 1)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or not 0 <= workers <= cap):
        raise InputError(f"workers must be an integer from 0 to {cap} (4 x this machine's cores), got {workers!r}")


def _report(on_error: OnError, index: int, item: Any, exc: EdgeclipError) -> None:
    if on_error == "raise":
        raise type(exc)(f"item {index}: {exc}") from None
    if on_error == "skip":
        log.warning("skipped item %d: %s", index, exc)
    else:
        on_error(index, item, exc)


class _Done:
    """A finished result for the in-line (workers=0) path, with the Future interface the loop uses."""

    def __init__(self, fn: Callable[[Any], Any], item: Any):
        self._value, self._error = None, None
        try:
            self._value = fn(item)
        except EdgeclipError as exc:
            self._error = exc

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> bool:
        return False


def stream_batches(items: Iterable[Any], prepare: Callable[[Any], Any], run: Callable[[list], np.ndarray],
                   batch_size: int, on_error: OnError = "raise", workers: int = 0, with_index: bool = False,
                   lookahead: Optional[int] = None) -> Iterator[Batch]:
    """Yield run(prepared batch) per batch of up to `batch_size` good items, in input order.

    `prepare` turns one item into what `run` stacks (EdgeclipError for a bad item); with `workers` > 0 it runs
    in that many threads, at most `lookahead` items (default 2 batches + workers) ahead of the consumer.
    """
    source = iter(items)
    ahead = lookahead or 2 * batch_size + workers
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgeclip-decode") if workers else None
    pending: deque[tuple[int, Any, Union[Future, _Done]]] = deque()
    index = 0
    exhausted = False

    def fill() -> None:
        nonlocal index, exhausted
        while not exhausted and len(pending) < ahead:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                return
            job = pool.submit(prepare, item) if pool else _Done(prepare, item)
            pending.append((index, item, job))
            index += 1

    try:
        while True:
            fill()
            if not pending:
                return
            rows, where = [], []
            while pending and len(rows) < batch_size:
                i, item, job = pending.popleft()
                try:
                    rows.append(job.result())
                    where.append(i)
                except EdgeclipError as exc:
                    _report(on_error, i, item, exc)
                del item, job
                fill()
            if rows:
                out = run(rows)
                del rows
                yield (np.asarray(where, dtype=np.int64), out) if with_index else out
    finally:
        for _, _, job in pending:
            job.cancel()
        pending.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["OnError", "check_stream_args", "default_workers", "stream_batches"]
