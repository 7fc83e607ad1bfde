"""`dvc.yaml`, written from the stage registry: `mvfer dvc-yaml --write`, drift checked by `--check`.

Why: the stage list lives in one place (`pipeline/stages.py`) and each stage's code deps are its shell
module's import closure (`pipeline/deps.py`), produced, never typed. A stage's command is `python -m
<its module>`, which imports neither the CLI nor other stages, so an edit elsewhere reruns nothing.
"""

from __future__ import annotations

import difflib
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


def stage_spec(root: Path, s: Stage) -> dict[str, Any]:
    """The dvc.yaml entry of one stage."""
    spec: dict[str, Any] = {"desc": s.desc, "cmd": s.cmd, "deps": code_deps(root, s.module) + list(s.deps)}
    if s.params:
        spec["params"] = list(s.params)
    for kind, key in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
        entries = [_out_entry(o) for o in s.outs if o.kind == kind]
        if entries:
            spec[key] = entries
    return spec


def render(root: Path) -> str:
    """The whole dvc.yaml text for the checkout at `root`."""
    doc = {"stages": {s.name: stage_spec(root, s) for s in STAGES}}
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
