"""In fresh interpreters: the pure-Python backend takes over when `tokenizers` (and `regex`) cannot be imported,
still reproduces every golden row, and importing the tokenizer never pulls in torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "torchvision", "timm", "open_clip")


def _run(code: str) -> dict:
    """Run `code` in a new interpreter at the project root; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


GOLDEN_RUN = """
import json, sys
{block}
from edgeclip.tokenizer import load_tokenizer
from tests.reference_fixtures import REFERENCE_DIR
cases = json.loads((REFERENCE_DIR / "tokenizer_golden.json").read_text(encoding="utf-8"))["cases"]
tok = load_tokenizer()
out = tok([c["text"] for c in cases]).tolist()
print(json.dumps({{"backend": tok.backend, "wrong": [c["text"] for c, row in zip(cases, out) if row != c["ids"]],
                  "loaded": sorted(m for m in ("tokenizers", "regex") if sys.modules.get(m) is not None)}}))
"""


@pytest.mark.parametrize("blocked", [("tokenizers",), ("tokenizers", "regex")], ids=["no-tokenizers", "no-tokenizers-no-regex"])
def test_auto_falls_back_to_python_and_stays_exact(blocked):
    block = "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    result = _run(GOLDEN_RUN.format(block=block))
    assert result["backend"] == "python"
    assert result["wrong"] == [], f"fallback differs from OpenCLIP on {result['wrong']}"
    assert not set(blocked) & set(result["loaded"])


def test_auto_prefers_hf_when_installed():
    pytest.importorskip("tokenizers", reason="the HF backend needs the `tokenizers` package")
    result = _run(GOLDEN_RUN.format(block=""))
    assert result["backend"] == "hf" and result["wrong"] == []


def test_importing_and_using_the_tokenizer_leaves_torch_out():
    code = (
        "import json, sys\n"
        "import edgeclip.tokenizer as t\n"
        "t.load_tokenizer(backend='python')('a photo of a cat')\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    assert _run(code) == []
