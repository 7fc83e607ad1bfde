"""What a DVC stage's command really imports and reads, against what `dvc.yaml` declares.

Why: `dvc status` is only as truthful as the deps list. A stage that imports a module it does not
declare keeps a stale output after that module changes. The import closure is traced from the
command itself (the CLI handler the command resolves to, then every `pipeline` module imported,
at any depth, including imports inside functions), never from a hand-written list.
"""

from __future__ import annotations

import ast
import re
import inspect
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGE = "pipeline"


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]


def load_stages(root: Path) -> list[Stage]:
    """Stages of `dvc.yaml` with `${...}` deps resolved from params.yaml (as DVC does)."""
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())

    def resolve(value: str) -> str:
        while "${" in value:
            start = value.index("${")
            end = value.index("}", start)
            node = params
            for part in value[start + 2:end].split("."):
                node = node[part]
            value = value[:start] + str(node) + value[end + 1:]
        return value

    def names(entries: list | None) -> tuple[str, ...]:
        out = []
        for e in entries or []:
            out.append(resolve(next(iter(e)) if isinstance(e, dict) else e))
        return tuple(out)

    stages = []
    for name, spec in doc["stages"].items():
        outs = names(spec.get("outs")) + names(spec.get("metrics")) + names(spec.get("plots"))
        stages.append(Stage(name, spec["cmd"], names(spec.get("deps")), outs))
    return stages


def module_file(root: Path, module: str) -> Path | None:
    """The source file of a `pipeline` module (package -> its __init__.py), None if there is none."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports_of(tree: ast.AST, module: str, is_package: bool) -> set[str]:
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


ENTRY = f"{PACKAGE}.cli"  # dispatches to every stage: only its top level and the handler run for one command


def _top_level(tree: ast.Module) -> ast.Module:
    """The module without its function and class bodies' imports (what importing it executes)."""
    keep = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return ast.Module(body=keep, type_ignores=[])


def closure(root: Path, seeds: set[str]) -> set[Path]:
    """Source files of the seed modules, their parent packages, and everything they import, transitively.

    Imports inside functions count (a stage imports its helpers lazily), except in the CLI, whose
    handlers each import one stage: for the CLI only its top level counts, and `command_modules`
    adds the imports of the handler and of `main` that the command runs.
    """
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
        tree = ast.parse(path.read_text())
        todo.extend(_imports_of(_top_level(tree) if mod == ENTRY else tree, mod, path.name == "__init__.py"))
    return files


def command_modules(cmd: str) -> set[str]:
    """The modules a `python -m pipeline ...` command runs: the CLI, and what its handler imports."""
    from pipeline.cli import build_parser

    argv = shlex.split(cmd)
    if argv[:3] != ["python", "-m", PACKAGE]:
        raise ValueError(f"not a `python -m {PACKAGE}` command: {cmd!r}")
    from pipeline import cli

    args = build_parser().parse_args(argv[3:])
    found = {f"{PACKAGE}.__main__", ENTRY}
    for func in (args.func, cli.main):
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
        found |= _imports_of(tree, func.__module__, False)
    return found


def covered(path: Path, root: Path, declared: tuple[str, ...]) -> bool:
    """A file is declared when a dep names it or a folder that holds it."""
    rel = path.resolve().relative_to(root.resolve())
    for dep in declared:
        d = Path(dep)
        if rel == d or d in rel.parents:
            return True
    return False


def undeclared_modules(root: Path, stage: Stage) -> list[str]:
    """Source files the stage's command imports but its deps do not cover (relative paths, sorted)."""
    files = closure(root, command_modules(stage.cmd))
    return sorted(str(f.relative_to(root)) for f in files if not covered(f, root, stage.deps))


# ---------------------------------------------------------------- files a command really reads

IGNORED_READS = (".git", ".dvc", "__pycache__", "params.yaml", "dvc.yaml", "dvc.lock", ".dvcignore")


_RESULT = re.compile(r"= \d+<(?P<path>[^>]*)>\s*$")


def parse_strace_opens(log: str, cwd: Path) -> set[Path]:
    """Paths opened successfully for reading (files and folder listings) in an `strace -f -y` log.

    `-y` makes strace print the path an opened descriptor refers to, so a name opened relative
    to a folder descriptor (`openat(5</repo/data>, "x")`) is resolved the way the kernel did.
    """
    found: set[Path] = set()
    for line in log.splitlines():
        if "open" not in line or "O_WRONLY" in line or "O_RDWR" in line or "O_CREAT" in line:
            continue
        m = _RESULT.search(line)
        if m:
            found.add(Path(m["path"]))
    return found


def _scratch(rel: Path) -> bool:
    """A stage's own temporary or set-aside copy (`.tmp`, `.<out>.old`): written by the stage, not an input."""
    return any(p == ".tmp" or (p.startswith(".") and p.endswith((".old", ".tmp"))) for p in rel.parts)


def undeclared_reads(root: Path, stage: Stage, opened: set[Path]) -> list[str]:
    """Files under the repository the command opened for reading that neither deps nor outs cover.

    Reading its own outputs is allowed (an incremental stage checks what it wrote before); the
    DVC and git internals and params.yaml (declared key by key) are not inputs of the command.
    """
    root = root.resolve()
    problems = []
    for path in sorted(opened):
        if not path.is_relative_to(root) or path == root:
            continue
        rel = path.relative_to(root)
        if rel.parts[0] in IGNORED_READS or "__pycache__" in rel.parts or rel.parts[0].startswith(".venv") or _scratch(rel):
            continue
        if rel.parts[0] == PACKAGE and path.is_dir():
            continue  # the import system lists package folders; the modules themselves are checked one by one
        if not (covered(path, root, stage.deps) or covered(path, root, stage.outs)
                or any(rel in Path(d).parents for d in stage.outs + stage.deps)):  # a folder on the way to one
            problems.append(str(rel))
    return problems
