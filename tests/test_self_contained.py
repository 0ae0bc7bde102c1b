"""The repository stands on its own: no test, conftest, benchmark, tool or doc points outside it.

Two checks on every such Python file: its text (absolute paths into other trees, `".."` joined onto a path) and
its syntax (`Path(__file__).parents[k]`, `.parent` chains, `os.path.dirname` nesting, `/ ".."` and `"../x"` given
to Path or open, followed through module-level names, must stay inside the repository root). Code and docs may
link and name only documents that exist in the repository (or that the project's tools write, like `report.md`),
and docs may point only at relative paths inside it.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("tests", "benchmarks", "tools")
TEXT_PATTERNS = {
    "absolute path into another tree": re.compile(r"""["'`\s(=](/work|/home|/Users|/root|/mnt)/"""),
    '".." joined onto a path': re.compile(r"""(/|,)\s*["']\.\.["']"""),
}
WRITTEN_BY_TOOLS = {"report.md"}  # names the project's commands write into their output folders


def repository_files() -> list[Path]:
    """The project's own files: what git tracks plus new files it does not ignore (caches, venvs and the
    emulated-aarch64 sysroot under .cache/ are not the project's); without git, every file outside hidden
    folders."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout.decode().split("\0")
        files = [REPO / name for name in listed if name]
    except (OSError, subprocess.SubprocessError):
        files = [p for p in REPO.rglob("*") if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def python_files() -> list[Path]:
    """Tests, conftests, benchmarks and tools; not this file, whose examples of what is caught would be caught."""
    files = [p for p in repository_files() if p.suffix == ".py"
             and (p.relative_to(REPO).parts[0] in SCANNED or p.name == "conftest.py")]
    return sorted(set(files) - {Path(__file__).resolve()})


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def outside_references(path: Path, text: str, repo: Path = REPO) -> list[str]:
    """Every place in `text` (the source of `path`) that refers to a location outside `repo`."""
    found = [f"line {text.count(chr(10), 0, m.start()) + 1}: {what}: {m.group().strip()!r}"
             for what, pattern in TEXT_PATTERNS.items() for m in pattern.finditer(text)]
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return found
    names: dict[str, Path] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            where = _location(node.value, path, names)
            if where is not None:
                names[node.targets[0].id] = where
    for node in ast.walk(tree):
        where = _location(node, path, names) if isinstance(node, ast.expr) else None
        if where is not None and where != repo and repo not in where.parents:
            found.append(f"line {node.lineno}: climbs out of the repository to {where}")
    return found


def _location(node: ast.AST, path: Path, names: dict[str, Path]) -> Optional[Path]:
    """The absolute path an expression derived from `__file__` denotes, or None when it is not one."""
    if isinstance(node, ast.Name):
        return path if node.id == "__file__" else names.get(node.id)
    if isinstance(node, ast.Attribute) and node.attr == "parent":
        base = _location(node.value, path, names)
        return base.parent if base is not None else None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
        base = _location(node.value.value, path, names)
        index = node.slice.value if isinstance(node.slice, ast.Constant) else None  # type: ignore[attr-defined]
        if base is None or not isinstance(index, int):
            return None
        return base.parents[index] if index < len(base.parents) else Path(base.anchor)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant):
        base = _location(node.left, path, names)
        return Path(os.path.normpath(base / str(node.right.value))) if base is not None else None
    if isinstance(node, ast.Call) and node.args:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        first = node.args[0]
        if name in ("Path", "PurePath", "open") and isinstance(first, ast.Constant) and str(first.value).startswith("../"):
            return Path(os.path.normpath(path.parent / str(first.value)))  # a relative path read from beside the file
        if name in ("Path", "PurePath", "abspath", "realpath"):
            return _location(first, path, names)
        if name == "dirname":
            base = _location(node.args[0], path, names)
            return base.parent if base is not None else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("resolve", "absolute"):
        return _location(node.func.value, path, names)
    return None


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_file_refers_only_to_paths_inside_the_repository(path):
    problems = outside_references(path, path.read_text(encoding="utf-8"))
    assert not problems, f"{path.relative_to(REPO)} points outside the repository:\n" + "\n".join(problems)


BAD = {
    "parents climbing past the root": 'from pathlib import Path\nX = Path(__file__).resolve().parents[3] / "data"\n',
    "a sibling folder": 'from pathlib import Path\nROOT = Path(__file__).parents[2]\nF = ROOT.parent / "reference" / "x.json"\n',
    "relative path climbing out": 'from pathlib import Path\nF = Path("../../../reference/x.json")\n',
    "parent chain": 'from pathlib import Path\nF = Path(__file__).parent.parent.parent.parent / "x"\n',
    "name then parent": 'from pathlib import Path\nROOT = Path(__file__).resolve().parents[2]\nUP = ROOT.parent\n',
    "dirname nesting": 'import os\nD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))\n',
    "joined dot-dot": 'import os\nD = os.path.join(os.path.dirname(__file__), "..", "..")\n',
    "absolute path": 'GOLDEN = "/home/me/reference/tokenizer_golden.json"\n',
}
GOOD = {
    "repo root": 'from pathlib import Path\nROOT = Path(__file__).resolve().parents[2]\nW = ROOT / "export" / "weights"\n',
    "own folder": 'from pathlib import Path\nR = Path(__file__).resolve().parent.parent / "reference"\n',
    "traversal as test data": 'BAD = {"../escape.txt": "00", "x": "../../nowhere/text.onnx"}\n',
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_checker_catches_outside_references(case):
    """The check itself works: a file two levels below the root that reaches outside is caught."""
    assert outside_references(REPO / "tests" / "sub" / "test_x.py", BAD[case]), case


@pytest.mark.parametrize("case", sorted(GOOD))
def test_checker_accepts_paths_inside_the_repository(case):
    assert outside_references(REPO / "tests" / "sub" / "test_x.py", GOOD[case]) == [], case


LINK = re.compile(r"\]\(([^)\s]+)\)")
RELATIVE = re.compile(r"(?<![\w.])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")
MD_NAME = re.compile(r"[\w./-]*\w\.md\b")


@pytest.mark.parametrize("doc", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_docs_link_and_name_only_files_in_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            missing.append(f"link {target}")
    for name in MD_NAME.findall(text):
        if Path(name).name not in WRITTEN_BY_TOOLS and not ((doc.parent / name).exists() or (REPO / name).exists()):
            missing.append(f"file {name}")
    for rel in RELATIVE.findall(text):
        where = [Path(os.path.normpath(base / rel)) for base in (doc.parent, REPO)]
        if not any((w == REPO or REPO in w.parents) and w.exists() for w in where):
            missing.append(f"path {rel} (not in the repository)")
    missing += [f"{what}: {m.group().strip()!r}" for what, pattern in TEXT_PATTERNS.items()
                if what != '".." joined onto a path' for m in pattern.finditer(text)]
    assert not missing, f"{doc.relative_to(REPO)} refers to what is not in the repository: {missing}"


PLANNING = re.compile(r"\b([Ii]ssue \d+|[Dd]one[- ]when \d|(EXPORT|DEVICE|QUANTIZE|QUANT|BENCH|RUNTIME|TOKENIZER|LEAD)('s\b| team))")
CODE_SUFFIXES = {".py", ".sh", ".toml", ".cfg", ".txt"}


def code_files() -> list[Path]:
    """Every text file of the repository that is not a doc (docs are checked above), this file aside."""
    return [p for p in repository_files() if (p.suffix in CODE_SUFFIXES or p.name in ("Makefile", "run"))
            and p != Path(__file__).resolve()]


def test_no_file_refers_to_issue_numbers_or_teams():
    """Code, tests and docs explain themselves; they do not cite issue numbers, acceptance items or team names."""
    files = code_files() + doc_files()
    found = [f"{p.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()!r}"
             for p in files for text in [p.read_text(encoding="utf-8", errors="replace")] for m in PLANNING.finditer(text)]
    assert not found, "mentions of issue numbers or teams:\n" + "\n".join(found)


def test_code_names_only_documents_that_exist():
    """A `.md` file named in code, tests or build files exists in the repository (or is one the tools write)."""
    found = []
    for p in code_files():
        text = p.read_text(encoding="utf-8", errors="replace")
        for name in MD_NAME.findall(text):
            if Path(name).name not in WRITTEN_BY_TOOLS and not ((p.parent / name).exists() or (REPO / name).exists()):
                found.append(f"{p.relative_to(REPO)}: {name}")
    assert not found, "documents that are not in the repository:\n" + "\n".join(found)
