"""The device side (edgeclip/, runtime/) never reaches torch, timm, open_clip or the build side."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = ("edgeclip", "runtime")
FORBIDDEN = ("torch", "torchvision", "timm", "open_clip", "export", "quantize")


def _device_files() -> list[Path]:
    return sorted(p for pkg in DEVICE_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


def test_device_source_has_no_forbidden_import_statement():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imported_roots(p) & set(FORBIDDEN)) for p in _device_files()
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"device-side files import build-side or torch packages: {offenders}"


def test_importing_every_device_module_leaves_torch_out_of_sys_modules():
    modules = []
    for path in _device_files():
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(parts))
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    leaked = json.loads(out.stdout.strip().splitlines()[-1])
    assert leaked == [], f"importing the device side pulled in: {leaked}"
