"""Run `dvc repro` and keep its own stage log: which stages ran, for how long, on what machine, at what commit.

Why: the docs' stage table must come from the run that measured it, not from hand timing. `make run`
calls this script; it streams DVC's output unchanged, timestamps each `Running stage '<name>'` line, and
writes `reports/run.json` (not a DVC output: a record of the last `make run`, committed with the docs and
rendered by `scripts/render_docs.py`). A stage DVC skipped is listed as skipped, so a partial rerun never
passes for a full one. The exit status is DVC's.

    python scripts/timed_repro.py [dvc repro arguments...]
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.utils.machine import git_commit, machine

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("timed_repro")

RUNNING = re.compile(r"^Running stage '(?P<name>[^']+)'")
SKIPPED = re.compile(r"^Stage '(?P<name>[^']+)' didn't change, skipping")


def stage_times(events: list[tuple[float, str, str]], end: float) -> list[dict[str, Any]]:
    """Per-stage rows from (time, kind, stage) events: a running stage lasts until the next event or the end.

    Pure, so the parsing is testable without DVC. DVC hashes a stage's outputs right after running it,
    before it prints the next line: that hashing counts towards the stage, as it does for the user.
    """
    rows: list[dict[str, Any]] = []
    for i, (t, kind, name) in enumerate(events):
        if kind == "skipped":
            rows.append({"stage": name, "status": "skipped", "wall_s": 0.0})
            continue
        nxt = events[i + 1][0] if i + 1 < len(events) else end
        rows.append({"stage": name, "status": "ran", "wall_s": round(max(nxt - t, 0.0), 1)})
    return rows


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # this interpreter's environment first on PATH, as `make run` does: DVC and the stages' `python -m` are its own
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    dvc = shutil.which("dvc", path=env["PATH"])
    if dvc is None:
        log.error("timed_repro: no `dvc` beside %s or on PATH: run `make install` first", sys.executable)
        return 127
    cmd = [dvc, "repro", *argv]
    started = dt.datetime.now(dt.UTC)
    commit = git_commit(ROOT)  # before the run: DVC rewrites dvc.lock and the reports, which would read as "dirty"
    t0 = time.monotonic()
    events: list[tuple[float, str, str]] = []
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    for line in proc.stdout or ():
        sys.stdout.write(line)
        sys.stdout.flush()
        for kind, pattern in (("ran", RUNNING), ("skipped", SKIPPED)):
            m = pattern.match(line.strip())
            if m:
                events.append((time.monotonic() - t0, kind, m["name"]))
    rc = proc.wait()
    end = time.monotonic() - t0
    rows = stage_times(events, end)
    report = {
        "command": " ".join(["dvc", *cmd[1:]]),
        "exit_status": rc,
        "started_utc": started.isoformat(timespec="seconds"),
        "total_s": round(end, 1),
        "stages": rows,
        "machine": machine(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "commit": commit,
    }
    out = ROOT / "reports" / "run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, json.dumps(report, indent=2) + "\n")
    ran = sum(r["status"] == "ran" for r in rows)
    log.info(
        "timed_repro: %d stages ran, %d skipped, %.0f s in all; log in %s",
        ran,
        len(rows) - ran,
        end,
        out.relative_to(ROOT),
    )
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
