"""Execution-provider policy: short names, "auto" priority NNAPI > XNNPACK > CPU, per-provider options.

The policy functions are pure (the available list can be injected) so they are unit-testable on any machine.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Sequence, Union

from edgeclip.errors import ProviderError

log = logging.getLogger("edgeclip")

CPU = "CPUExecutionProvider"
XNNPACK = "XnnpackExecutionProvider"
NNAPI = "NnapiExecutionProvider"
SHORT_NAMES = {"cpu": CPU, "xnnpack": XNNPACK, "nnapi": NNAPI}
AUTO_ORDER = (NNAPI, XNNPACK, CPU)
DEFAULT_XNNPACK_THREADS_CAP = 4  # XNNPACK's own pool when threads=None: min(cpu_count, this)

Requested = Union[str, Sequence[str], None]
ProviderList = list[tuple[str, dict]]


def available_providers() -> list[str]:
    """The providers this onnxruntime build offers."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def ort_name(name: str) -> str:
    """Map a short name (cpu/xnnpack/nnapi, any case) or an ORT provider name to the ORT name."""
    if not isinstance(name, str) or not name.strip():
        raise ProviderError(f"provider names must be non-empty strings, got {name!r}")
    key = name.strip()
    if key.lower() in SHORT_NAMES:
        return SHORT_NAMES[key.lower()]
    if key.endswith("ExecutionProvider"):
        return key
    raise ProviderError(
        f"unknown provider {name!r}; use 'auto', one of {', '.join(SHORT_NAMES)}, or an ONNX Runtime provider name"
    )


def short_name(name: str) -> str:
    """The short name of an ORT provider name (e.g. 'xnnpack'), or the name itself when it has none."""
    for short, full in SHORT_NAMES.items():
        if full == name:
            return short
    return name


def _describe_available(available: Sequence[str]) -> str:
    return ", ".join(f"{short_name(p)} ({p})" if short_name(p) != p else p for p in available) or "none"


THREADS_PER_CORE_LIMIT = 4  # more intra-op threads than 4 per core only add contention
THREADS_HARD_LIMIT = 256  # and never more than this, whatever os.cpu_count() says


def max_threads() -> int:
    """The most intra-op threads accepted: 4 per core (os.cpu_count()), at most 256."""
    return min(THREADS_HARD_LIMIT, THREADS_PER_CORE_LIMIT * (os.cpu_count() or 1))


def check_threads(threads: object, what: str = "threads") -> Optional[int]:
    """`threads` if it is None or an integer from 1 to max_threads(); else ProviderError naming `what` and the value.

    The one validator of thread counts (API `threads=` and every command's --threads): 100000 threads once
    took a machine down (16 GB RSS, load 400), and 0 or negatives have no meaning.
    """
    if threads is None:
        return None
    limit = max_threads()
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= limit:
        raise ProviderError(f"{what} must be an integer from 1 to {limit} (4 per CPU core, at most "
                            f"{THREADS_HARD_LIMIT}; this machine has {os.cpu_count() or 1} cores) or None, got {threads!r}")
    return threads


def thread_count(text: str) -> int:
    """argparse type for --threads: an integer from 1 to max_threads(), else a usage error naming the value."""
    import argparse

    try:
        return check_threads(int(text))
    except (ValueError, ProviderError):
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {max_threads()} (4 per CPU core, at most "
                                         f"{THREADS_HARD_LIMIT}), got {text!r}") from None


def _xnnpack_threads(threads: Optional[int]) -> int:
    return threads if threads else max(1, min(os.cpu_count() or 1, DEFAULT_XNNPACK_THREADS_CAP))


def provider_options(name: str, threads: Optional[int]) -> dict:
    """Options for one provider: XNNPACK gets its own thread pool; the others take none from Python."""
    if name == XNNPACK:
        return {"intra_op_num_threads": str(_xnnpack_threads(threads))}
    return {}


def _requested_list(requested: Requested) -> list[str]:
    if requested is None:
        return ["auto"]
    if isinstance(requested, str):
        return [requested]
    if not isinstance(requested, (list, tuple)):
        raise ProviderError(f"providers must be a name or a list of names, got {requested!r}")
    items = list(requested)
    if not items:
        raise ProviderError("an empty provider list was given; use 'auto' or name at least one provider")
    return items


def resolve_providers(
    requested: Requested = "auto",
    available: Optional[Sequence[str]] = None,
    fixed_shape: bool = True,
    threads: Optional[int] = None,
) -> ProviderList:
    """Choose the providers (with options) for one graph, in priority order; CPU always ends the list.

    "auto" takes NNAPI > XNNPACK > CPU among `available` (default: this onnxruntime build). An explicit
    request for a provider the build lacks raises ProviderError listing the available ones. NNAPI needs
    fixed shapes, so for a dynamic-shape graph it is skipped and the reason logged.
    """
    check_threads(threads)
    avail = list(available) if available is not None else available_providers()
    items = _requested_list(requested)
    auto = len(items) == 1 and str(items[0]).strip().lower() == "auto"
    if auto:
        wanted = [p for p in AUTO_ORDER if p in avail]
    else:
        wanted = []
        for item in items:
            name = ort_name(item)
            if name not in avail:
                raise ProviderError(
                    f"provider {item!r} is not available in this onnxruntime build; available: {_describe_available(avail)}"
                )
            if name not in wanted:
                wanted.append(name)
    if NNAPI in wanted and not fixed_shape:
        wanted.remove(NNAPI)
        log.log(
            logging.INFO if auto else logging.WARNING,
            "NNAPI skipped: this graph has dynamic shapes and NNAPI needs fixed ones (export with a fixed batch)",
        )
    if CPU not in wanted:
        wanted.append(CPU)
    if auto:
        skipped = [short_name(p) for p in AUTO_ORDER if p not in avail]
        log.info(
            "providers auto: chose %s (priority nnapi > xnnpack > cpu; not in this build: %s)",
            ", ".join(short_name(p) for p in wanted),
            ", ".join(skipped) or "none",
        )
    return [(name, provider_options(name, threads)) for name in wanted]


NO_SPINNING = {"session.intra_op.allow_spinning": "0"}


def session_threads(providers: Sequence[str], threads: Optional[int]) -> tuple[int, dict]:
    """ORT's intra-op thread count and session config entries for a provider list.

    With XNNPACK the CPU EP gets 1 thread (XNNPACK has its own pool); otherwise `threads` (0 = let ONNX Runtime
    decide). Either way the intra-op threads do not spin-wait between parallel sections: spinning threads take
    the cores from whatever else runs, e.g. the streaming path's decode threads or another app (measured in
    docs/runtime.md, "Providers").
    """
    return (1 if XNNPACK in providers else threads or 0), dict(NO_SPINNING)


__all__ = [
    "AUTO_ORDER", "CPU", "NNAPI", "SHORT_NAMES", "XNNPACK", "available_providers", "check_threads", "max_threads",
    "ort_name", "provider_options", "resolve_providers", "session_threads", "short_name", "thread_count",
]
