"""`pip install .` (no extras) in a fresh venv, then embedding an image and a text loads no torch/timm/open_clip."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

from tiny_bundle import make_tiny_bundle

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "edgeclip", "runtime", "export", "quantize")

PROBE = textwrap.dedent("""
    import json, sys
    import edgeclip
    from edgeclip import Encoder
    enc = Encoder(sys.argv[1])
    img = enc.encode_image(sys.argv[2])
    txt = enc.encode_text("a photo of a cat")
    print(json.dumps({
        "file": edgeclip.__file__,
        "norms": [float((img ** 2).sum()), float((txt ** 2).sum())],
        "shapes": [list(img.shape), list(txt.shape)],
        "tokenizer": enc.tokenizer.backend,
        "providers": enc.providers,
        "forbidden": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "open_clip", "torchvision")),
    }))
""")


def _copy_sources(dest: Path) -> Path:
    """Copy the installable part of the repo so pip's in-tree build leaves the checkout untouched."""
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def test_fresh_venv_install_is_torch_free(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle")
    image = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    src = _copy_sources(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env.update(PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HOME=str(tmp_path / "home"))
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                             env=env, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([str(py), "-c", PROBE, str(bundle), str(image)], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    result = json.loads(probe.stdout.strip().splitlines()[-1])
    assert result["forbidden"] == []
    assert Path(result["file"]).is_relative_to(venv)  # the installed copy ran, not the checkout
    assert result["shapes"] == [[1, 16], [1, 16]] and np.allclose(result["norms"], 1.0, atol=1e-5)
    assert "CPUExecutionProvider" in result["providers"]
    has_tokenizers = subprocess.run([str(py), "-c", "import tokenizers"], capture_output=True, env=env).returncode == 0
    assert result["tokenizer"] == ("hf" if has_tokenizers else "python")
    helped = subprocess.run([str(venv / "bin" / "edgeclip"), "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert helped.returncode == 0 and "classify" in helped.stdout
