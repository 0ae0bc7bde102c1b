"""Build commands run without their extras installed: one line naming the package and the install command,
exit 1, and nothing written. The missing package is simulated by a `None` entry in `sys.modules`, which makes
its import fail exactly as on a machine that never installed it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_without(package: str, module: str, args: list[str]) -> subprocess.CompletedProcess:
    code = (f"import runpy, sys; sys.modules[{package!r}] = None; sys.argv = [{module!r}, *{args!r}]; "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("package, module, extra", [
    ("torch", "export", "export"),
    ("onnx", "quantize.int8", "quantize"),
])
def test_missing_build_package_is_one_clear_line(tmp_path, package, module, extra):
    out = tmp_path / "bundle"
    result = _run_without(package, module, ["--model", "demo", "--out", str(out)])
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"'{package}'" in result.stderr and f"pip install -e '.[{extra}]'" in result.stderr
    assert not out.exists()


def test_a_missing_module_of_our_own_is_not_hidden():
    from edgeclip.errors import missing_build_package

    with pytest.raises(ModuleNotFoundError):
        missing_build_package(ModuleNotFoundError("no module", name="export.nothing_here"), "python -m export", "export")
