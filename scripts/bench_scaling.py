"""Scaling benchmark of the data stages: capture, ingest, align and media at 1x, 2x and 4x the subjects.

Each size is a fresh temporary project (`$MVFER_ROOT`) with this checkout's params.yaml, except
`capture.n_subjects` (base x scale) and no withdrawn or release-restricted subjects (so every
captured take is aligned and encoded, and the takes grow exactly with the scale). Each stage runs
as `dvc repro` runs it, `python -m <stage module>`, in a child process; per stage it records:

- wall seconds, and wall seconds per take;
- CPU seconds (user + system) of the stage and all its workers (`wait4` of the child: its own
  usage plus that of every worker it waited for), and CPU seconds per take;
- peak RSS: the largest resident set of any one process of the stage (the main process or a worker);
- the machine's 1-minute load average before and after the stage: wall time on a shared machine
  is only comparable between sizes when the load was alike (CPU seconds much less disturbed).

A stage's time = start-up (imports, worker pool, weights) + per-take work; "time linear in takes"
means the marginal cost per take, (t(4x) - t(1x)) / (takes(4x) - takes(1x)), equals the per-take
cost at each size once start-up is subtracted. The table prints both. Writes the figures with date,
machine and git commit to `reports/bench/scaling.json` (or `--json`).

    python scripts/bench_scaling.py [--subjects 2] [--scales 1 2 4] [--json reports/bench/scaling.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from pipeline.layout import ROOT_ENV, Layout
from pipeline.utils.machine import git_commit, machine

REPO = Path(__file__).resolve().parents[1]
STAGES = (
    ("capture", "pipeline.capture.stage"),
    ("ingest", "pipeline.ingest.stage"),
    ("align", "pipeline.align.stage"),
    ("media", "pipeline.media.stage"),
)
ROOT = Path(__file__).resolve().parent.parent  # the checkout
log = logging.getLogger("bench_scaling")


def _project(root: Path, subjects: int) -> dict:
    """A project root holding this checkout's params with `subjects` subjects; the params written."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["capture"] |= {"n_subjects": subjects, "n_withdrawn": 0, "n_no_public_release": 0}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def _run_stage(module: str, root: Path) -> dict:
    """Run one stage module on `root`; wall s, CPU s (stage + workers), peak RSS MiB of its largest process."""
    env = os.environ | {ROOT_ENV: str(root), "PYTHONPATH": str(REPO)}
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", module], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{module} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _takes(layout: Layout, stage: str) -> int:
    if stage == "capture" or stage == "ingest":
        return sum(1 for _ in (layout.root / "data" / "raw" / "takes").iterdir())
    m = pd.read_parquet(layout.manifest)
    return int((m["status"] == "accepted").sum())


def measure(base: int, scales: list[int]) -> list[dict]:
    rows = []
    for scale in scales:
        with tempfile.TemporaryDirectory(prefix=f"mvfer-scaling-{scale}x-") as tmp:
            root = Path(tmp) / "project"
            _project(root, base * scale)
            layout = Layout(root)
            for stage, module in STAGES:
                fig = _run_stage(module, root)
                n = _takes(layout, stage)
                row = {"scale": scale, "subjects": base * scale, "stage": stage, "takes": n, **fig}
                row |= {"wall_ms_per_take": round(1000 * fig["wall_s"] / n, 1)}
                row |= {"cpu_ms_per_take": round(1000 * fig["cpu_s"] / n, 1)}
                rows.append(row)
                log.info("%s", row)
    return rows


def marginal(rows: list[dict]) -> dict[str, dict]:
    """Per stage: start-up and cost per take from the smallest and largest size (a straight line)."""
    out = {}
    for stage, _ in STAGES:
        r = sorted((x for x in rows if x["stage"] == stage), key=lambda x: x["takes"])
        lo, hi = r[0], r[-1]
        if hi["takes"] == lo["takes"]:
            continue
        fit = {}
        for key in ("wall_s", "cpu_s"):
            per = (hi[key] - lo[key]) / (hi["takes"] - lo["takes"])
            fit[f"{key[:-2]}_ms_per_take"] = round(1000 * per, 1)
            fit[f"{key[:-2]}_startup_s"] = round(lo[key] - per * lo["takes"], 2)
        fit["peak_rss_growth"] = round(hi["peak_rss_mib"] / lo["peak_rss_mib"], 3)
        out[stage] = fit
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=2, help="subjects at 1x (default 2)")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--json", type=Path, default=REPO / "reports" / "bench" / "scaling.json")
    args = ap.parse_args()
    logging.basicConfig(level="INFO", format="%(message)s")
    started = datetime.now(UTC)
    rows = measure(args.subjects, args.scales)
    fits = marginal(rows)
    print(
        f"{'stage':<8} {'scale':>5} {'takes':>5} {'wall s':>7} {'CPU s':>7} {'wall ms/take':>12} "
        f"{'CPU ms/take':>11} {'peak RSS MiB':>12} {'load':>10}"
    )
    for r in rows:
        print(
            f"{r['stage']:<8} {r['scale']:>4}x {r['takes']:>5} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
            f"{r['wall_ms_per_take']:>12.1f} {r['cpu_ms_per_take']:>11.1f} {r['peak_rss_mib']:>12.0f} "
            f"{r['load_1min'][0]:>4.1f}-{r['load_1min'][1]:<4.1f}"
        )
    print("\nstraight line through the smallest and largest size: start-up + cost per take")
    for stage, f in fits.items():
        print(
            f"{stage:<8} wall {f['wall_startup_s']:5.1f} s + {f['wall_ms_per_take']:6.1f} ms/take; "
            f"CPU {f['cpu_startup_s']:5.1f} s + {f['cpu_ms_per_take']:6.1f} ms/take; "
            f"peak RSS x{f['peak_rss_growth']:.2f} from {args.scales[0]}x to {args.scales[-1]}x"
        )
    report = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(python=platform.python_version()),
        "commit": git_commit(REPO, "pipeline"),
        "base_subjects": args.subjects,
        "scales": args.scales,
        "definition": (
            "per stage, python -m <module> on a fresh project of base x scale subjects (no withdrawals); "
            "cpu_s: user+system of the stage and its waited-for workers (wait4); peak_rss_mib: largest "
            "single process; *_per_take divide by the stage's takes; fit: line through smallest and largest size"
        ),
        "rows": rows,
        "fit": fits,
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
