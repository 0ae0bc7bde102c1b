"""Fetch images from their URLs with the standard library: bounded concurrency, timeouts, a size limit.

Every failure becomes a short, countable reason (``http 404``, ``timeout``, ``too large``, ``unreachable``,
``not http``); nothing here raises for a dead URL.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Iterable, Iterator
from urllib.parse import urlsplit

USER_AGENT = "edgeclip/0.1 (calibration images for INT8 quantization)"
CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    """How long and how much one image may take, and how many download at once."""

    timeout: float = 10.0  # seconds for the connection and for each read
    deadline: float = 30.0  # seconds for the whole body
    max_bytes: int = 20 * 1024 * 1024
    workers: int = 16


@dataclass
class Fetched:
    """One URL's outcome: the body, or the reason it was skipped."""

    key: str
    url: str
    data: bytes | None = None
    error: str | None = None


class _Skip(Exception):
    """Internal: the URL gave no usable body (the message is the counted reason)."""


def _read_limited(resp, limits: FetchLimits, started: float) -> bytes:
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise _Skip("too large")
    chunks, total = [], 0
    while True:
        chunk = resp.read(CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limits.max_bytes:
            raise _Skip("too large")
        if time.monotonic() - started > limits.deadline:
            raise _Skip("timeout")
        chunks.append(chunk)


def fetch_url(url: str, limits: FetchLimits = FetchLimits()) -> bytes:
    """The body of ``url`` (http/https only), or ``_Skip`` naming why not."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise _Skip("not http")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=limits.timeout) as resp:
            return _read_limited(resp, limits, started)
    except urllib.error.HTTPError as exc:
        raise _Skip(f"http {exc.code}") from None
    except urllib.error.URLError as exc:
        raise _Skip("timeout" if isinstance(exc.reason, (socket.timeout, TimeoutError)) else "unreachable") from None
    except (socket.timeout, TimeoutError):
        raise _Skip("timeout") from None
    except (http.client.HTTPException, OSError, ValueError):
        raise _Skip("unreachable") from None


def _one(key: str, url: str, limits: FetchLimits) -> Fetched:
    try:
        return Fetched(key, url, data=fetch_url(url, limits))
    except _Skip as exc:
        return Fetched(key, url, error=str(exc))


def fetch_all(items: Iterable[tuple[str, str]], limits: FetchLimits = FetchLimits()) -> Iterator[Fetched]:
    """Download ``(key, url)`` pairs with at most ``limits.workers`` at once; yield each as it completes."""
    pool = ThreadPoolExecutor(max_workers=max(1, limits.workers), thread_name_prefix="edgeclip-fetch")
    try:
        futures = [pool.submit(_one, key, url, limits) for key, url in items]
        for future in as_completed(futures):
            yield future.result()
    finally:  # a consumer that stops early does not wait for the URLs still queued
        pool.shutdown(wait=False, cancel_futures=True)
