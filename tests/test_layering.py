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


def _device_modules() -> list[str]:
    """Dotted names of every module under edgeclip/ and runtime/ (no __main__)."""
    modules = []
    for path in _device_files():
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules.append(".".join(parts))
    return modules


def test_importing_every_device_module_leaves_torch_out_of_sys_modules():
    modules = _device_modules()
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    leaked = json.loads(out.stdout.strip().splitlines()[-1])
    assert leaked == [], f"importing the device side pulled in: {leaked}"


def test_every_device_module_imports_first_in_a_fresh_interpreter():
    """No import cycle: `import runtime.session` (or any device module) works before anything else is loaded."""
    failed = {}
    for module in _device_modules():
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            failed[module] = (proc.stderr.strip().splitlines() or ["?"])[-1]
    assert not failed, failed
