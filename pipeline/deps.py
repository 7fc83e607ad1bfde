"""The code a stage runs: the import closure of its module, traced from the source.

Why: `dvc status` is only as truthful as each stage's deps. They are produced from the code (every
`pipeline` module the stage module imports, at any depth, imports inside functions included), not
typed by hand; `dvc.yaml` is written from them and the report's provenance hashes the same files.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "pipeline"


def module_file(root: Path, module: str) -> Path | None:
    """The source file of a `pipeline` module (package -> its __init__.py), None if there is none."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every `pipeline` module named by an import anywhere in the tree (functions included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base_parts = parts if is_package else parts[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def closure(root: Path, seeds: set[str] | list[str] | tuple[str, ...]) -> set[Path]:
    """Source files of the seed modules, their parent packages, and everything they import, transitively."""
    todo = list(seeds)
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = module_file(root, mod)
        if path is None:
            continue
        files.add(path)
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # importing a.b.c runs a and a.b
        tree = ast.parse(path.read_text(encoding="utf-8"))
        todo.extend(imports_of(tree, mod, path.name == "__init__.py"))
    for path in list(files):  # non-Python sources a module builds from (pipeline/models/csrc/*.cpp)
        csrc = path.parent / "csrc"
        if csrc.is_dir():
            files.update(p for p in csrc.iterdir() if p.is_file() and not p.name.startswith("."))
    return files


def code_deps(root: Path, module: str) -> list[str]:
    """The closure of `module` as sorted paths relative to `root` (what dvc.yaml lists)."""
    return sorted(p.relative_to(root).as_posix() for p in closure(root, {module}))


def code_digest(root: Path, module: str) -> str:
    """sha256 over the closure's paths and bytes: the version of the code a stage ran."""
    h = hashlib.sha256()
    for rel in code_deps(root, module):
        h.update(rel.encode() + b"\0")
        h.update((root / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()
