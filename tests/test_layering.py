"""The layers form a DAG: every import goes down the list in LAYERS, no module cycle, no torch on the device side.

The graph is read from the source (AST) of every module in edgeclip/, runtime/, quantize/, export/ and
benchmarks/. An edge is any of:
- an import statement, at the top of the file or inside a function (a lazy import is still an import);
- the implicit import of every parent package (`import edgeclip.errors` runs `edgeclip/__init__.py`);
- `importlib.import_module("x.y")` with a literal name;
- a string naming a module of the project, alone or as `"module:attr"` (`run_child("runtime.bench_worker")`
  runs `python -m runtime.bench_worker`; a recipe's factory is resolved with importlib).
`importlib.import_module` with a computed name is refused: nobody could tell what it imports.

A package's PEP 562 `__getattr__` (lazy public re-exports) is its own node `<package>.__getattr__`: it runs
only when a caller asks for one of those names, so importing a submodule does not reach it, while
`from edgeclip import Encoder` does.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgeclip", "runtime", "quantize", "export", "benchmarks")
DEVICE_PACKAGES = ("edgeclip", "runtime")
FORBIDDEN = ("torch", "torchvision", "timm", "open_clip", "export", "quantize", "benchmarks")

# Bottom up. A module takes the layer of its longest matching entry (exact name, or a `prefix.*` pattern).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("edgeclip core: errors, files, paths, vectors, bundle format, preprocessing, tokenizer, shard reader", (
        "edgeclip", "edgeclip.errors", "edgeclip.files", "edgeclip.paths", "edgeclip.vectors", "edgeclip.bundle",
        "edgeclip.bundle.*", "edgeclip.file_cache", "edgeclip.preprocess", "edgeclip.images", "edgeclip.image*",
        "edgeclip.tokenizer",
        "edgeclip.tokenizer.*", "edgeclip.data", "edgeclip.data.*", "edgeclip.shards", "edgeclip.hub")),
    # runtime.bench_timing is pure timing and process plumbing (numpy, time, subprocess): the quantizer's
    # latency ratio uses it, so it sits here, below everything that times something.
    ("sessions, providers and small ORT helpers", (
        "runtime", "runtime.session", "runtime.providers", "runtime.ort_tools",
        "runtime.bench_timing", "runtime.graph_contract", "runtime.graph_cache")),
    ("Encoder, zero-shot, index and search, streaming; edgeclip's public names", (
        "edgeclip.*", "edgeclip.__getattr__")),
    ("on-device tools: benchmark runner, readiness, ORT format, the edgeclip command line", (
        "runtime.*", "edgeclip.cli", "edgeclip.*_cli", "edgeclip.__main__")),
    ("build data: the demo's synthetic dataset, shard writing, stored augmentations", (
        "quantize", "quantize.errors", "quantize.augment", "quantize.shards", "quantize.synthetic")),
    ("quantize library", ("quantize.*",)),
    ("export library", ("export", "export.*")),
    ("build commands and benchmarks", (
        "quantize.int8", "export.cli", "export.__main__", "benchmarks", "benchmarks.*")),
]
# Command modules run with `python -m`; nothing but another command imports them (library code lives below).
COMMANDS = ("quantize.int8", "export.cli", "export.__main__", "edgeclip.__main__")

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_][\w.]*)?$")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@lru_cache(maxsize=None)
def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index into LAYERS of the longest pattern matching `module` (exact beats `prefix.*`)."""
    best, best_len = None, -1
    for i, (_, patterns) in enumerate(LAYERS):
        for pat in patterns:
            if pat.endswith("*"):
                stem = pat[:-1]
                hit = module.startswith(stem) and module != stem.rstrip(".")
                score = len(stem) - 0.5
            else:
                hit, score = module == pat, len(pat)
            if hit and score > best_len:
                best, best_len = i, score
    assert best is not None, f"{module} has no layer: add it to LAYERS in tests/test_layering.py"
    return best


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest known module that `name` starts with (a.b.c -> a.b when c is an attribute)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in modules:
            return cand
    return None


def _with_parents(module: str, modules: set[str]) -> list[str]:
    parts = module.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in modules]


@lru_cache(maxsize=None)
def _top_level_names(module: str) -> frozenset[str] | None:
    """Names bound at the top of a package that has a PEP 562 `__getattr__`; None for any other module."""
    path = _sources().get(module)
    if path is None or path.name != "__init__.py":
        return None
    tree = ast.parse(path.read_text())
    if not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        return None
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
    return frozenset(bound)


def _served_lazily(package: str, name: str) -> bool:
    bound = _top_level_names(package)
    return bound is not None and name not in bound and not name.startswith("__")


class _Collector(ast.NodeVisitor):
    """Edges of one module: (source node, target module, how, line)."""

    def __init__(self, module: str, is_package: bool, modules: set[str]):
        self.module, self.is_package, self.modules = module, is_package, modules
        self.node = module
        self.edges: list[tuple[str, str, str, int]] = []
        self.dynamic: list[int] = []
        self.imported_roots: set[str] = set()
        self.docstrings: set[int] = set()

    def add(self, target: str | None, how: str, line: int) -> None:
        if target is None:
            return
        # a module's own parent packages are already running when it is imported: no edge to them
        ancestors = set(_with_parents(self.module, self.modules))
        for t in _with_parents(target, self.modules):
            if t != self.node and t not in ancestors:
                self.edges.append((self.node, t, how, line))

    def visit_FunctionDef(self, node):
        self._docstring(node)
        if self.is_package and node.name == "__getattr__" and node.col_offset == 0:
            saved, self.node = self.node, f"{self.module}.__getattr__"
            self.edges.append((self.node, self.module, "its package", node.lineno))
            self.generic_visit(node)
            self.node = saved
        else:
            self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        self._docstring(node)
        self.generic_visit(node)

    def visit_Module(self, node):
        self._docstring(node)
        self.generic_visit(node)

    def _docstring(self, node):
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self.docstrings.add(id(body[0].value))

    def visit_Import(self, node):
        for alias in node.names:
            self.imported_roots.add(alias.name.split(".")[0])
            self.add(_resolve(alias.name, self.modules), "import", node.lineno)

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            name = ".".join(base + ([node.module] if node.module else []))
        else:
            name = node.module or ""
        self.imported_roots.add(name.split(".")[0])
        self.add(_resolve(name, self.modules), "from-import", node.lineno)
        for alias in node.names:
            full = f"{name}.{alias.name}"
            if full in self.modules:
                self.add(full, "from-import", node.lineno)
            elif name in self.modules and _served_lazily(name, alias.name):
                self.add(f"{name}.__getattr__", f"lazy name {alias.name}", node.lineno)

    def visit_Attribute(self, node):
        # `import edgeclip` ... `edgeclip.Encoder`: the lazy public name is an import too
        if isinstance(node.value, ast.Name) and node.value.id in self.modules and _served_lazily(node.value.id, node.attr):
            self.add(f"{node.value.id}.__getattr__", f"lazy name {node.attr}", node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self.imported_roots.add(arg.value.split(".")[0])
            elif not _outside_project(arg):
                self.dynamic.append(node.lineno)
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, str) and id(node) not in self.docstrings and _DOTTED.match(node.value):
            name = node.value.partition(":")[0]
            if ("." in name or ":" in node.value) and name in self.modules:
                self.add(name, f"string {node.value!r}", getattr(node, "lineno", 0))


def _outside_project(arg) -> bool:
    """An f-string name with a literal head outside the project, like f"onnxruntime.tools.{name}"."""
    head = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else None
    return (isinstance(head, ast.Constant) and isinstance(head.value, str) and "." in head.value
            and head.value.split(".")[0] not in PACKAGES)


def _only_called_with_outside_names(tree: ast.Module, line: int) -> bool:
    """`def _require(name): importlib.import_module(name)` is fine when every call in the module passes a literal
    outside the project (an optional dependency imported by name, e.g. `_require("ray")`)."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.lineno <= line <= (fn.end_lineno or 0):
            calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == fn.name]
            return bool(calls) and all(
                c.args and isinstance(c.args[0], ast.Constant) and isinstance(c.args[0].value, str)
                and c.args[0].value.split(".")[0] not in PACKAGES for c in calls)
    return False


@lru_cache(maxsize=None)
def _scan() -> tuple[list, dict, dict]:
    """(edges, dynamic imports {module: [lines]}, imported top-level names {module: roots})."""
    sources = _sources()
    modules = set(sources)
    modules |= {f"{m}.__getattr__" for m in sources if _top_level_names(m) is not None}
    edges, dynamic, roots = [], {}, {}
    for module, path in sources.items():
        collector = _Collector(module, path.name == "__init__.py", modules)
        tree = ast.parse(path.read_text(), filename=str(path))
        # docstrings first, so that visit_Constant can skip them wherever they are
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                collector._docstring(node)
        collector.visit(tree)
        edges += collector.edges
        lines = [line for line in collector.dynamic if not _only_called_with_outside_names(tree, line)]
        if lines:
            dynamic[module] = lines
        roots[module] = collector.imported_roots
    return edges, dynamic, roots


def _where(module: str, line: int) -> str:
    base = module.removesuffix(".__getattr__")
    path = _sources()[base]
    return f"{path.relative_to(ROOT)}:{line}"


def test_every_module_has_a_layer():
    missing = []
    for module in _sources():
        try:
            layer_of(module)
        except AssertionError as exc:
            missing.append(str(exc))
    assert not missing, "\n".join(missing)


def test_imports_only_go_down_the_layers():
    edges, _, _ = _scan()
    up = sorted({
        f"{_where(src, line)}: {src} [{layer_of(src) + 1}] -> {dst} [{layer_of(dst) + 1}] ({how})"
        for src, dst, how, line in edges if layer_of(dst) > layer_of(src)
    })
    legend = "\n".join(f"  {i + 1}. {name}" for i, (name, _) in enumerate(LAYERS))
    assert not up, f"imports that go up the layers:\n" + "\n".join(up) + f"\nlayers, bottom up:\n{legend}"


def test_no_module_imports_a_command():
    edges, _, _ = _scan()
    bad = sorted({f"{_where(src, line)}: {src} -> {dst} ({how})" for src, dst, how, line in edges
                  if dst in COMMANDS and src not in COMMANDS})
    assert not bad, "library code imports a command module (run it with python -m instead):\n" + "\n".join(bad)


def _cycles(edges) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan, then a path inside)."""
    graph = defaultdict(set)
    for src, dst, _, _ in edges:
        graph[src].add(dst)
    index, low, stack, on_stack, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(list(graph)):
        if v not in index:
            strong(v)
    cycles = []
    for comp in comps:
        start = min(comp)
        # breadth-first back to start inside the component
        prev, frontier, found = {start: None}, [start], None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & comp):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found:
                    break
            frontier = nxt
        path, v = [], found
        while v is not None:
            path.append(v)
            v = prev[v]
        cycles.append(list(reversed(path)) + [start])
    return cycles


def test_the_module_graph_has_no_cycle():
    edges, _, _ = _scan()
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_import_by_computed_name():
    _, dynamic, _ = _scan()
    where = [f"{_where(m, line)}" for m, lines in dynamic.items() for line in lines]
    assert not where, ("importlib.import_module with a computed name (use a registry of callables, or a literal "
                       "module name):\n" + "\n".join(where))


def test_device_source_has_no_forbidden_import_statement():
    _, _, roots = _scan()
    offenders = {m: sorted(r & set(FORBIDDEN)) for m, r in roots.items() if m.split(".")[0] in DEVICE_PACKAGES}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"device-side files import build-side or torch packages: {offenders}"


def _device_modules() -> list[str]:
    """Dotted names of every module under edgeclip/ and runtime/ (no __main__)."""
    return [m for m in _sources() if m.split(".")[0] in DEVICE_PACKAGES and not m.endswith("__main__")]


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
    """No import cycle at run time either: `import runtime.session` (or any device module) works first."""
    failed = {}
    for module in _device_modules():
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            failed[module] = (proc.stderr.strip().splitlines() or ["?"])[-1]
    assert not failed, failed


def test_importing_an_edgeclip_submodule_leaves_the_encoder_and_sessions_unloaded():
    """`import edgeclip.errors` (what runtime and the build side do) runs no Encoder or ONNX Runtime code."""
    code = ("import json, sys; import edgeclip.errors, edgeclip.bundle, edgeclip.files\n"
            "print(json.dumps(sorted(m for m in ('edgeclip.encoder', 'runtime.session', 'onnxruntime') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
