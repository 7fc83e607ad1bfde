"""What a DVC stage's command really reads, against what `dvc.yaml` declares.

Why: `dvc status` is only as truthful as the deps list. The code deps are produced from the import
closure (`pipeline/deps.py`, checked by `mvfer dvc-yaml --check`); the files a command opens are
checked here under strace, so a data dep the registry forgot is caught too.
"""

from __future__ import annotations

import re
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
            for part in value[start + 2 : end].split("."):
                node = node[part]
            value = value[:start] + str(node) + value[end + 1 :]
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


def covered(path: Path, root: Path, declared: tuple[str, ...]) -> bool:
    """A file is declared when a dep names it or a folder that holds it."""
    rel = path.resolve().relative_to(root.resolve())
    for dep in declared:
        d = Path(dep)
        if rel == d or d in rel.parents:
            return True
    return False


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
        if (
            rel.parts[0] in IGNORED_READS
            or "__pycache__" in rel.parts
            or rel.parts[0].startswith(".venv")
            or _scratch(rel)
        ):
            continue
        if rel.parts[0] == PACKAGE and path.is_dir():
            continue  # the import system lists package folders; the modules themselves are checked one by one
        if not (
            covered(path, root, stage.deps)
            or covered(path, root, stage.outs)
            or any(rel in Path(d).parents for d in stage.outs + stage.deps)
        ):  # a folder on the way to one
            problems.append(str(rel))
    return problems
