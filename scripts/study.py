"""Queue and run the full study (params.study.yaml) as DVC experiments; `--dry-run` prints the commands.

Each experiment is `params.yaml` with the study's `common` settings and its own applied through
`dvc exp run --queue -S key=value`, so the default `dvc repro` stays the primary test alone and the
study's results are compared with `dvc exp show` / `dvc plots diff`. Every setting is validated
against the typed parameters before anything is queued: a typo fails here in one line, not hours later.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.learn.study import settings
from pipeline.params import load_params
from pipeline.utils.log import setup_logging

log = logging.getLogger("study")
ROOT = Path(__file__).resolve().parents[1]


def hydra(value: Any) -> str:
    """A value in the override syntax of `dvc exp run -S` (Hydra's): [a,b], {k:[a,b]}, scalars as YAML writes them."""
    if isinstance(value, list):
        return "[" + ",".join(hydra(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra(v)}" for k, v in value.items()) + "}"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def apply(params: dict[str, Any], sets: dict[str, Any]) -> dict[str, Any]:
    """`params` (the parsed params.yaml) with dotted keys set, for validation, the way `dvc exp run -S ++key=`
    sets them: a scalar or list replaces, a dict is merged into the dict already there (Hydra's force-add)."""
    out = yaml.safe_load(yaml.safe_dump(params))
    for key, value in sets.items():
        node = out
        *parents, last = key.split(".")
        for p in parents:
            if not isinstance(node, dict) or p not in node:
                raise SystemExit(f"params.study.yaml: {key} is not a parameter in params.yaml (no {p!r})")
            node = node[p]
        if not isinstance(node, dict) or last not in node:
            raise SystemExit(f"params.study.yaml: {key} is not a parameter in params.yaml")
        if isinstance(value, dict) and isinstance(node[last], dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return out


def commands(
    study_file: Path, params_file: Path, scale: str | None = None, only: list[str] | None = None
) -> list[list[str]]:
    """One `dvc exp run --queue` per experiment, each checked against the typed parameters first."""
    study = yaml.safe_load(study_file.read_text())
    base = yaml.safe_load(params_file.read_text())
    out = []
    for name, sets in settings(study, scale, only).items():
        with tempfile.TemporaryDirectory() as tmp:
            checked = Path(tmp) / "params.yaml"
            checked.write_text(yaml.safe_dump(apply(base, sets)))
            try:
                load_params(checked)  # fails loudly on a bad value
            except PipelineError as e:  # named after the study's experiment, not the temporary file
                raise SystemExit(
                    f"params.study.yaml: experiment {name}: {str(e).replace(str(checked), 'params')}"
                ) from None
        cmd = ["dvc", "exp", "run", "--queue", "-n", name]
        for key, value in sets.items():
            cmd += ["-S", f"++{key}={hydra(value)}"]  # `++`: set even where the key is new (a dict like train.search)
        out.append(cmd)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=ROOT / "params.study.yaml")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--jobs", type=int, default=1, help="experiments run at once (dvc queue start -j)")
    ap.add_argument("--scale", help="a compute scale of params.study.yaml `scales` (experiments named SCALE-NAME)")
    ap.add_argument("--only", help="comma-separated experiment names (default: every one)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, queue nothing")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        cmds = commands(args.study, args.params, args.scale, args.only.split(",") if args.only else None)
    except (OSError, yaml.YAMLError, PipelineError, AttributeError, KeyError) as e:
        log.error("%s", e if isinstance(e, PipelineError) else f"{args.study}: {e}")
        return 2
    cmds.append(["dvc", "queue", "start", "-j", str(args.jobs)])
    for cmd in cmds:
        log.info("%s", shlex.join(cmd))
        if not args.dry_run:
            rc = subprocess.run(cmd, cwd=ROOT).returncode
            if rc:
                log.error("%s failed (exit %d): nothing after it was queued or started", shlex.join(cmd[:6]), rc)
                return 1
    if not args.dry_run:
        log.info("queued %d experiments; follow with `dvc queue status`, compare with `dvc exp show`", len(cmds) - 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
