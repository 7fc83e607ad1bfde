"""Gather the study's DVC experiments into `reports/study.json` (what docs/experiment.md renders).

python scripts/study_report.py [--scale reduced] [--only a,b] [--out reports/study.json]

Each experiment of params.study.yaml (named SCALE-NAME with a scale) is found among the DVC experiment
refs (`refs/exps/...`, the newest of a name), and its `reports/metrics.json` is read from its commit:
the figures are the ones `dvc exp show` gives, nothing is recomputed. An experiment not found is
listed as missing. The comparisons of all experiments are Holm-corrected as one family.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.learn.study import StudyError, collect, settings
from pipeline.utils import io
from pipeline.utils.log import setup_logging
from pipeline.utils.machine import git_commit, machine

log = logging.getLogger("study_report")
ROOT = Path(__file__).resolve().parents[1]


def experiment_refs(root: Path) -> dict[str, tuple[str, str, int]]:
    """Experiment name -> (ref, commit, commit time) of the newest DVC experiment of that name."""
    got = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname) %(objectname) %(committerdate:unix)"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if got.returncode:
        raise StudyError(f"{root}: git cannot list the DVC experiments ({got.stderr.strip() or got.returncode})")
    out = got.stdout
    refs: dict[str, tuple[str, str, int]] = {}
    for line in out.splitlines():
        ref, sha, when = line.split()
        name = ref.rsplit("/", 1)[-1]
        if ref.count("/") >= 4 and (name not in refs or int(when) > refs[name][2]):
            refs[name] = (ref, sha, int(when))
    return refs


def metrics_at(root: Path, commit: str) -> dict[str, Any] | None:
    """The experiment's reports/metrics.json (kept in Git: `cache: false`), or None where it has none."""
    got = subprocess.run(["git", "show", f"{commit}:reports/metrics.json"], cwd=root, capture_output=True, text=True)
    if got.returncode:
        return None
    try:
        data = json.loads(got.stdout)
    except json.JSONDecodeError as e:
        raise StudyError(f"{commit[:12]}:reports/metrics.json is not JSON ({e.msg}, line {e.lineno})") from None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, default=ROOT / "params.study.yaml")
    ap.add_argument("--scale", help="the compute scale the experiments ran at (params.study.yaml `scales`)")
    ap.add_argument("--only", help="comma-separated experiment names (default: every one)")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "study.json")
    args = ap.parse_args(argv)
    setup_logging()
    try:
        study = yaml.safe_load(args.study.read_text())
        planned = settings(study, args.scale, args.only.split(",") if args.only else None)
    except (OSError, yaml.YAMLError, PipelineError, AttributeError, KeyError) as e:
        log.error("%s", e if isinstance(e, PipelineError) else f"{args.study}: {e}")
        return 2
    try:
        return _report(args, study, planned)
    except PipelineError as e:
        log.error("%s", e)
        return 2


def _report(args: argparse.Namespace, study: dict[str, Any], planned: dict[str, dict[str, Any]]) -> int:
    refs = experiment_refs(ROOT)
    experiments: dict[str, dict[str, Any]] = {}
    for name, sets in planned.items():
        if name not in refs:
            experiments[name] = {"settings": sets, "missing": "no DVC experiment of this name (`dvc exp list`)"}
            continue
        ref, commit, _ = refs[name]
        metrics = metrics_at(ROOT, commit)
        parts = ref.split("/")  # refs/exps/<2 hex>/<38 hex>/<name>: the baseline commit the experiment ran on
        experiments[name] = {
            "settings": sets,
            "ref": ref,
            "commit": commit,
            "baseline": parts[2] + parts[3],
            "metrics": metrics,
        }
        if metrics is None:
            experiments[name]["missing"] = f"{commit[:12]} has no reports/metrics.json"
    report = collect(experiments)
    report["scale"] = args.scale
    report["scale_settings"] = study.get("scales", {}).get(args.scale) if args.scale else None
    report["generated"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "commit": git_commit(ROOT),
    }
    io.write_json(args.out, report)
    missing = [n for n, e in report["experiments"].items() if "missing" in e]
    log.info(
        "%s: %d experiment(s), %d comparison(s) in one Holm family%s",
        args.out,
        len(planned) - len(missing),
        report["n_comparisons"],
        f"; missing: {', '.join(missing)}" if missing else "",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
