"""Is the Hugging Face Hub reachable? One bounded probe, so offline runs fail in seconds.

huggingface_hub retries a failed metadata request five times with growing pauses (1+2+4+8+8 = 23 s
per file) before it gives up; callers ask here first and go cache-only when this says no.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.error
import urllib.request

from edgeclip.hub import offline as offline_requested  # HF_HUB_OFFLINE / EDGECLIP_OFFLINE, read at each call

PROBE_SECONDS = 3.0


def hub_endpoint() -> str:
    """The Hub address huggingface_hub uses (``HF_ENDPOINT``, default https://huggingface.co)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_unreachable_reason(timeout: float = PROBE_SECONDS) -> str | None:
    """None when the Hub answers an HTTP request within ``timeout`` seconds, else why not (one line).

    The answer is kept for the rest of the process (per endpoint), so several lookups cost one probe.
    """
    if offline_requested():
        return "offline mode is set (HF_HUB_OFFLINE / EDGECLIP_OFFLINE)"
    return _probe(hub_endpoint(), timeout)


@functools.lru_cache(maxsize=8)
def _probe(endpoint: str, timeout: float) -> str | None:
    outcome: list[str | None] = []

    def probe() -> None:  # name resolution has no timeout of its own, hence the thread
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # any HTTP answer means the Hub is there
            outcome.append(None)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            outcome.append(f"{endpoint} is unreachable ({getattr(exc, 'reason', exc)})")

    thread = threading.Thread(target=probe, name="edgeclip-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"{endpoint} did not answer within {timeout:g} s"
