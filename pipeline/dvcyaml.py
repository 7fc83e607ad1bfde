"""`dvc.yaml`, written from the stage registry: `mvfer dvc-yaml --write`, drift checked by `--check`.

Why: the stage list lives in one place (`pipeline/stages.py`) and each stage's code deps are its shell
module's import closure (`pipeline/deps.py`), produced, never typed. A stage's command is `python -m
<its module>`, which imports neither the CLI nor other stages, so an edit elsewhere reruns nothing.

The simulator is an optional branch: with `source.kind: recordings` (a lab's own data, `mvfer init
recordings`) its stages are not in dvc.yaml, no other stage depends on their outputs, and an optional
`${key}` dep left empty in params.yaml (`qa.truth: ""`) is not declared, so `dvc repro` never renders it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.deps import code_deps
from pipeline.stages import STAGES, Out, Stage

HEADER = """\
# GENERATED from pipeline/stages.py by `mvfer dvc-yaml --write`: do not edit by hand (CI runs --check).
# Each stage's code deps are the import closure of its module; data deps, params and outputs come
# from the registry. `${...}` are params.yaml keys.
"""


def _out_entry(o: Out) -> str | dict[str, Any]:
    props: dict[str, Any] = {}
    if not o.cache:
        props["cache"] = False
    if o.persist:
        props["persist"] = True
    props.update(o.plot)
    return {o.path: props} if props else o.path


SIMULATOR_BRANCH = "simulator"
_PARAM_REF = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def _param(doc: dict[str, Any], key: str) -> Any:
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read_doc(root: Path) -> dict[str, Any]:
    """params.yaml as plain data (not validated here: the stages validate it), `{}` when absent."""
    path = root / "params.yaml"
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else {}


def branches_off(doc: dict[str, Any]) -> set[str]:
    """The optional branches the data source leaves out: the simulator's stages unless `source.kind` is simulator."""
    kind = _param(doc, "source.kind") or SIMULATOR_BRANCH
    return set() if kind == SIMULATOR_BRANCH else {SIMULATOR_BRANCH}


def planned(doc: dict[str, Any]) -> tuple[Stage, ...]:
    """The stages dvc.yaml holds for this data source (a lab's recordings never plan the simulator)."""
    off = branches_off(doc)
    return tuple(s for s in STAGES if s.branch not in off)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def data_deps(s: Stage, doc: dict[str, Any], dropped_outputs: list[str]) -> list[str]:
    """A stage's data deps for this data source: an optional `${key}` dep left empty in params.yaml (qa.truth: "")
    is no dep, and an output of a branch that is not planned is no dep either."""
    out = []
    for d in s.deps:
        m = _PARAM_REF.match(d)
        if m and doc and not _param(doc, m.group(1)):
            continue
        if _under(d, dropped_outputs):
            continue
        out.append(d)
    return out


def stage_spec(root: Path, s: Stage, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dvc.yaml entry of one stage."""
    doc = read_doc(root) if doc is None else doc
    off = branches_off(doc)
    dropped = [o.path for other in STAGES if other.branch in off for o in other.outs]
    deps = code_deps(root, s.module) + data_deps(s, doc, dropped)
    spec: dict[str, Any] = {"desc": s.desc, "cmd": s.cmd, "deps": deps}
    if s.params:
        spec["params"] = list(s.params)
    for kind, key in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
        entries = [_out_entry(o) for o in s.outs if o.kind == kind]
        if entries:
            spec[key] = entries
    return spec


def render(root: Path) -> str:
    """The whole dvc.yaml text for the checkout at `root`, for the data source its params.yaml names."""
    params = read_doc(root)
    doc = {"stages": {s.name: stage_spec(root, s, params) for s in planned(params)}}
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=120, default_flow_style=False)


def drift(root: Path) -> list[str]:
    """A unified diff between the committed dvc.yaml and the generated one (empty when in step)."""
    path = root / "dvc.yaml"
    have = path.read_text(encoding="utf-8") if path.exists() else ""
    want = render(root)
    if have == want:
        return []
    return list(
        difflib.unified_diff(
            have.splitlines(),
            want.splitlines(),
            "dvc.yaml (committed)",
            "dvc.yaml (from pipeline/stages.py)",
            lineterm="",
        )
    )
