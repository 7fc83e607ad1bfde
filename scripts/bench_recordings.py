"""Time the walk-through of docs/recordings.md on issue 21's pilot folder, command by command, as the lab types it.

Why: the page promises a lab's folder reaches a verified release in four commands; how long each takes is a
measured figure, rendered into the page (`recordings_walkthrough` block of `scripts/render_docs.py`) from the
report this script writes, never typed by hand. It builds the pilot folder (`pipeline.capture.pilot`: 3 subjects
x 6 expressions x 2 poses, 36 H.264 clips at 30 fps, with its warts), copies this checkout into a temporary
folder (`git init` there, as a clone would have it), and runs, timing each:

1. `mvfer init recordings ../pilot --creator "Face Lab, Univ. X"`
2. the consent sheet, filled (the script writes the rows the lab would type in an editor)
3. `dvc repro` (each stage's time from DVC's own log, as `scripts/timed_repro.py` reads it)
4. `mvfer release verify release/pilot-0.1.0`

It writes `reports/bench/recordings.json` (date, machine, load average, commit, each command's wall seconds and
exit status) and prints a table. A command that fails stops the run with its output's tail; the report is then
not written, so a figure in the docs always comes from a complete walk-through.

    python scripts/bench_recordings.py                      # training as init writes it (params.yaml)
    python scripts/bench_recordings.py --training reduced   # the integration test's smaller training
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from pipeline.capture import pilot
from pipeline.utils.checkout import copy_checkout
from pipeline.utils.machine import git_commit, machine

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reports" / "bench" / "recordings.json"
CREATOR = "Face Lab, Univ. X"
PILOT_DIR = "pilot"  # the folder's name is the release's name (`release/pilot-0.1.0`)
TIMEOUT_S = 6 * 3600
log = logging.getLogger("bench_recordings")


class StepFailed(RuntimeError):
    """A walk-through command exited non-zero (the message holds its output's tail)."""


def _timed_repro() -> ModuleType:
    """`scripts/timed_repro.py`, which already reads DVC's stage log: reused, not rewritten."""
    spec = importlib.util.spec_from_file_location("timed_repro", ROOT / "scripts" / "timed_repro.py")
    if spec is None or spec.loader is None:
        raise ImportError("scripts/timed_repro.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env() -> dict[str, str]:
    """The lab's shell: this virtual environment's `mvfer` and `dvc` first on PATH, no MVFER_ROOT override."""
    env = {k: v for k, v in os.environ.items() if k != "MVFER_ROOT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def _run(argv: list[str], cwd: Path) -> tuple[float, str]:
    """Run one command as typed; its wall seconds and its output (stdout and stderr together)."""
    log.info("$ %s", shlex.join(argv))
    t0 = time.perf_counter()
    res = subprocess.run(
        argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S
    )
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise StepFailed(f"`{shlex.join(argv)}` exited {res.returncode}:\n{res.stdout[-4000:]}")
    return wall, res.stdout


def _run_streamed(argv: list[str], cwd: Path, reader: ModuleType) -> tuple[float, list[dict[str, Any]]]:
    """`dvc repro` with each stage timed from DVC's own `Running stage` lines as they arrive."""
    log.info("$ %s", shlex.join(argv))
    t0 = time.monotonic()
    events: list[tuple[float, str, str]] = []
    lines: list[str] = []
    proc = subprocess.Popen(
        argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    for line in proc.stdout or ():
        lines.append(line)
        for kind, pattern in (("ran", reader.RUNNING), ("skipped", reader.SKIPPED)):
            m = pattern.match(line.strip())
            if m:
                events.append((time.monotonic() - t0, kind, m["name"]))
                log.info("  %.0f s  %s %s", time.monotonic() - t0, kind, m["name"])
    rc = proc.wait()
    wall = time.monotonic() - t0
    if rc != 0:
        raise StepFailed(f"`{shlex.join(argv)}` exited {rc}:\n{''.join(lines)[-4000:]}")
    rows: list[dict[str, Any]] = reader.stage_times(events, wall)
    return wall, rows


def _training(params_file: Path) -> dict[str, Any]:
    """The training settings the run used (what makes `dvc repro` long), from the clone's params.yaml."""
    p = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    f, t = p["features"], p["train"]
    return {
        "features": {k: f[k] for k in ("backends", "seeds", "epochs", "frames_per_take")},
        "train": {k: t[k] for k in ("variants", "seeds", "epochs")},
    }


def walk(base: Path, training: str, reader: ModuleType) -> dict[str, Any]:
    """Build the pilot and the clone under `base`, run the four commands; the report (without provenance)."""
    t0 = time.perf_counter()
    lab = pilot.make_pilot(base / PILOT_DIR, base / "work")
    build_s = time.perf_counter() - t0
    log.info("pilot folder: %d clips in %s (%.0f s)", pilot.CLIPS, lab, build_s)
    clone = copy_checkout(ROOT, base / "project")
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    # `mvfer` is `python -m pipeline` run in the clone: the console script would import the working checkout's
    # code (an editable install), while the lab's `mvfer` is its own checkout's
    mvfer = [sys.executable, "-m", "pipeline"]
    steps: list[dict[str, Any]] = []

    init = ["mvfer", "init", "recordings", f"../{PILOT_DIR}", "--creator", CREATOR]
    wall, out = _run([*mvfer, *init[1:]], clone)
    if "without the simulator" not in out:
        raise StepFailed(f"init did not write dvc.yaml without the simulator:\n{out[-4000:]}")
    steps.append({"step": "init", "command": shlex.join(init), "wall_s": round(wall, 2)})

    sheet = clone / "data" / "recordings" / "subjects.csv"
    t0 = time.perf_counter()
    sheet.write_text(pilot.CONSENT, encoding="utf-8")
    wall = time.perf_counter() - t0
    steps.append(
        {
            "step": "consent",
            "command": "$EDITOR data/recordings/subjects.csv",
            "wall_s": round(wall, 2),
            "note": "the script writes the 3 rows; the lab's typing is not timed",
        }
    )

    if training == "reduced":  # not a lab's command: the integration test's smaller training, said in the report
        p = pilot.reduced_training(yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8")))
        (clone / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False), encoding="utf-8")

    wall, stages = _run_streamed(["dvc", "repro"], clone, reader)
    steps.append({"step": "repro", "command": "dvc repro", "wall_s": round(wall, 2), "stages": stages})

    name = json.loads((clone / "reports" / "release.json").read_text(encoding="utf-8"))["name"]
    verify = ["mvfer", "release", "verify", f"release/{name}"]
    wall, _ = _run([*mvfer, *verify[1:]], clone)
    steps.append({"step": "verify", "command": shlex.join(verify), "wall_s": round(wall, 2)})

    ingest = json.loads((clone / "reports" / "ingest.json").read_text(encoding="utf-8"))
    release = json.loads((clone / "reports" / "release.json").read_text(encoding="utf-8"))
    return {
        "pilot": {
            "clips": pilot.CLIPS,
            "subjects": 3,
            "fps": pilot.FPS,
            "build_s": round(build_s, 1),
            "accepted_by_ingest": ingest["accepted"],
            "released_takes": release["takes"],
        },
        "training": {"mode": training, **_training(clone / "params.yaml")},
        "steps": steps,
        "total_s": round(sum(s["wall_s"] for s in steps), 1),
    }


def table(report: dict[str, Any]) -> str:
    """The walk-through's times as a plain-text table (what the script prints)."""
    rows = [(s["step"], s["command"], f"{s['wall_s']:.1f} s") for s in report["steps"]]
    rows += [
        (f"  {r['stage']}", "", f"{r['wall_s']:.1f} s" if r["status"] == "ran" else r["status"])
        for s in report["steps"]
        for r in s.get("stages", [])
    ]
    width = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<12} {b:<{width}} {c:>9}" for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--training",
        choices=("params", "reduced"),
        default="params",
        help="params: as init writes params.yaml (default); reduced: the integration test's 2 variants x 1 seed",
    )
    ap.add_argument("--out", type=Path, default=OUT, help=f"report to write (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reader = _timed_repro()
    started = datetime.now(UTC)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench_recordings_") as tmp:
        try:
            report = walk(Path(tmp), args.training, reader)
        except (StepFailed, subprocess.TimeoutExpired) as e:
            log.error("%s", e)
            return 1
    report["provenance"] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load_start,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "commit": git_commit(ROOT),
        "python": platform.python_version(),
        "mv_scan": os.environ.get("MVFER_MV_SCAN", "auto"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_out, args.out)
    print(table(report))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
