"""Benchmark ingest beside its floor, in one run, on a generated tree of frame-folder takes.

Builds `--takes` folders of `--frames` PNG frames (96x96, noise + a moving disc) with a capture log
and consent table in a temporary folder, then times these rows on that same tree (takes/s and
frames/s count all its takes and frames):

- `floor: decode + sha256`: in this process, one core, no pool and no manifest: every frame file of
  every take read once, its bytes fed to the take's sha256 (as `take_sha256` hashes
  them: name, size, bytes) and decoded by the probe's own decoder (`cv2.imdecode`, what
  `read_frame` calls, OpenCV on one thread). Ingest probes by decoding every frame and checksums
  every byte, so it cannot beat this.
- `probe_take, in process`: the probe ingest's workers run (`probe_take`), called here on each take
  in turn: the stage less its pool, spawned workers, log/consent reading and manifest.
- `stage: ingest`: `ingest()` end to end with `--workers` supervised workers (spawned per run).

Per row: wall seconds, and CPU seconds of this process plus the workers it waited for. `x floor` =
the row's CPU seconds / the floor's (per-core cost; a busy machine disturbs it less than wall time);
`wall x floor` = the row's wall seconds / the floor's (the floor is one process: on N idle cores N
workers could at best reach 1/N). With `--repeats N` the rows run in turn N times and each keeps
its fastest (least CPU) repeat. Prints a table and peak memory; asserts nothing; `--json` also
writes the figures with the date, machine, load average and commit.

    python scripts/bench_ingest.py [--takes 100 --frames 100 --workers 2 --repeats 1]
                                   [--json reports/bench/ingest.json]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from pipeline.ingest.probe import probe_take
from pipeline.ingest.run import ingest
from pipeline.layout import Layout
from pipeline.params import Params, load_params
from pipeline.utils.frames import list_frame_files
from pipeline.utils.machine import git_commit, machine

ROOT = Path(__file__).resolve().parent.parent  # the checkout

FLOOR = "floor: decode + sha256"
PROBE = "probe_take, in process"
STAGE = "stage: ingest"
FLOOR_DEFINITION = (
    "every frame file of the same takes read once, its bytes hashed into the take's sha256 and decoded by "
    "cv2.imdecode (the probe's decoder), one process, one core, no pool, no manifest"
)


def build_tree(raw: Path, n_takes: int, n_frames: int, size: int = 96) -> None:
    """A rig-layout folder whose takes are frame folders; one subject, all consented."""
    rng = np.random.default_rng(0)
    rows = []
    for t in range(n_takes):
        folder = raw / "takes" / f"t{t:05d}"
        folder.mkdir(parents=True)
        for i in range(n_frames):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            cv2.circle(img, (10 + i % (size - 20), size // 2), 8, (200, 180, 160), -1)
            ok, buf = cv2.imencode(".png", img)
            (folder / f"{i:05d}.png").write_bytes(buf.tobytes())
        rows.append(
            {
                "take_id": f"t{t:05d}",
                "subject_id": "sub-bench",
                "session": "s1",
                "camera": "cam0",
                "yaw": "0",
                "pitch": "0",
                "illumination": "frontal",
                "prompted_expression": "happiness",
                "fps": "25",
                "recorded_at": "2026-01-01T00:00:00",
                "file": f"takes/t{t:05d}",
            }
        )
    with open(raw / "capture_log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (raw / "subjects.csv").write_text(
        "subject_id,consent_research,consent_public_release,withdrawn,consent_date,withdrawn_date\n"
        "sub-bench,True,True,False,2026-01-01,\n"
    )


def floor(takes: list[Path]) -> int:
    """Read, hash and decode every frame of the takes once, in this process; returns the frames decoded."""
    n = 0
    for folder in takes:
        h = hashlib.sha256()
        for f in list_frame_files(folder):
            data = f.read_bytes()
            h.update(f.name.encode("utf-8", "surrogateescape") + b"\0")
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
            if cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) is not None:
                n += 1
        h.hexdigest()
    return n


def probe_in_process(takes: list[Path]) -> int:
    """`probe_take` on each take in this process; returns the frames it reports."""
    return sum(probe_take(t).n_frames or 0 for t in takes)


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of the workers it waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds incl. waited-for workers, result) of fn()."""
    t, c = time.perf_counter(), _cpu_s()
    out = fn()
    return time.perf_counter() - t, _cpu_s() - c, out


def bench(p: Params, raw: Path, repeats: int) -> tuple[dict[str, dict[str, float]], dict]:
    """Each row's fastest repeat as {wall_s, cpu_s, count}, and the stage's report from its last run.

    count: frames decoded (floor), frames the probe reports (probe_take), takes accepted (stage).
    """
    takes = sorted(d for d in (raw / "takes").iterdir() if d.is_dir())
    report: dict = {}

    def stage() -> int:
        nonlocal report
        _, report = ingest(p, raw)
        return int(report["accepted"])

    rows: dict[str, Callable[[], int]] = {
        FLOOR: lambda: floor(takes),
        PROBE: lambda: probe_in_process(takes),
        STAGE: stage,
    }
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for name, fn in rows.items():
            wall, cpu, out = _timed(fn)
            if name not in best or cpu < best[name]["cpu_s"]:
                best[name] = {"wall_s": wall, "cpu_s": cpu, "count": float(out)}
    return best, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takes", type=int, default=100)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="run the rows in turn this many times; each keeps its best")
    ap.add_argument("--json", type=Path, help="also write the figures here (e.g. reports/bench/ingest.json)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(1)  # as the probe runs in its workers
    load = os.getloadavg()
    p = load_params(Layout.discover().params_file)
    p = p.model_copy(update={"ingest": p.ingest.model_copy(update={"workers": args.workers})})
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        t = time.perf_counter()
        build_tree(raw, args.takes, args.frames)
        built = time.perf_counter() - t
        best, report = bench(p, raw, max(1, args.repeats))
    n_takes, n = args.takes, args.takes * args.frames
    peak_parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    f = best[FLOOR]
    for name in (FLOOR, PROBE):
        if best[name]["count"] != n:
            logging.getLogger("bench").warning("%s saw %d of the %d frames", name, best[name]["count"], n)
    figures: dict[str, dict[str, float]] = {}
    for name, r in best.items():
        figures[name] = {
            "wall_s": round(r["wall_s"], 3),
            "cpu_s": round(r["cpu_s"], 3),
            "takes_per_s": round(n_takes / r["wall_s"], 2),
            "frames_per_s": round(n / r["wall_s"], 1),
            "frames_per_s_per_core": round(n / r["cpu_s"], 1),
            "x_floor": round(r["cpu_s"] / f["cpu_s"], 2),
            "wall_x_floor": round(r["wall_s"] / f["wall_s"], 2),
        }
    print(
        f"ingest: {n_takes} takes x {args.frames} frames = {n} frames of 96x96 PNG (tree built in {built:.1f} s); "
        f"stage with {args.workers} worker(s), {report['accepted']} accepted; best of {max(1, args.repeats)}; "
        f"load {load[0]:.1f}, {os.cpu_count()} cores\n"
        f"floor = {FLOOR_DEFINITION}\n"
        "x floor = CPU seconds (this process + waited-for workers) / the floor's; wall x floor = wall seconds / "
        "the floor's"
    )
    print(
        f"{'row':<24} {'wall s':>7} {'CPU s':>7} {'takes/s':>8} {'frames/s':>9} {'per core':>9} "
        f"{'x floor':>8} {'wall x floor':>13}"
    )
    for name, r in figures.items():
        print(
            f"{name:<24} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['takes_per_s']:8.1f} {r['frames_per_s']:9.0f} "
            f"{r['frames_per_s_per_core']:9.0f} {r['x_floor']:8.2f} {r['wall_x_floor']:13.2f}"
        )
    print(f"peak RSS: this process {peak_parent:.0f} MiB, largest worker {peak_child:.0f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        s = figures[STAGE]
        out = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "load_1min": [round(load[0], 2), round(os.getloadavg()[0], 2)],
            "commit": git_commit(ROOT, "pipeline/ingest", "pipeline/utils"),
            "takes": n_takes,
            "frames": n,
            "frames_per_take": args.frames,
            "workers": args.workers,
            "repeats": max(1, args.repeats),
            "accepted": report["accepted"],
            "tree_built_s": round(built, 2),
            "ingest_s": s["wall_s"],
            "frames_per_s": s["frames_per_s"],
            "takes_per_s": s["takes_per_s"],
            "floor": FLOOR_DEFINITION,
            "floor_frames_per_s": figures[FLOOR]["frames_per_s"],
            "floor_takes_per_s": figures[FLOOR]["takes_per_s"],
            "x_floor": s["x_floor"],
            "wall_x_floor": s["wall_x_floor"],
            "rows": figures,
            "peak_rss_mib": {"parent": round(peak_parent), "largest_worker": round(peak_child)},
        }
        args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
