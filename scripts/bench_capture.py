"""Benchmark the capture simulator beside its floor, in one run, on the performances of params.yaml.

Rows (one core, OpenCV on one thread, the stage's own functions on a sample of its performances):

- `stage`: `render_performance`, what each capture worker runs: render, mp4v encoding, truth files.
- `render`: `render_takes`, the pose-independent surfaces and the three cameras' frames, no files.
- `floor: write`: the same frames (rendered beforehand, held in memory) encoded to the raw format
  (mp4v) and their truth written (.npz): the part no renderer can remove.
- `floor: noise`: drawing the sensor noise alone; the output is bit-identical to the committed
  capture only if the same normal stream is drawn, so this part stays too.

Each is timed in CPU seconds of this process (`time.process_time`), interleaved performance by
performance, so a busy machine slows every row alike. Prints a table; asserts nothing.

    python scripts/bench_capture.py [--performances 12] [--subjects 2] [--json reports/bench/capture.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from pipeline.capture.simulate import (
    Performance,
    RenderedPerformance,
    plan_performances,
    render_performance,
    render_takes,
    simulate,
    subject_ids,
    write_take,
)
from pipeline.layout import Layout
from pipeline.params import CaptureParams, load_params
from pipeline.utils.machine import git_commit, machine

ROOT = Path(__file__).resolve().parent.parent  # the checkout

R = TypeVar("R")


def _write(p: CaptureParams, r: RenderedPerformance, folder: Path) -> None:
    """Encode and save already rendered takes as the stage does (the I/O floor)."""
    for pose, frames, lm2, vis in r.takes:
        write_take(p, frames, folder / f"{pose.camera}.mp4")
        np.savez_compressed(folder / f"{pose.camera}.npz", landmarks68=lm2.astype(np.float32), visible68=vis)


def _noise(p: CaptureParams, perf: Performance) -> None:
    """The sensor noise of one performance's frames, alone."""
    buf = np.empty((p.frame_size, p.frame_size, 3))
    rng = np.random.default_rng(perf.index)
    for _ in range(p.n_frames * len(p.poses)):
        rng.standard_normal(out=buf)
        buf *= 2.0


def _time(cpu: dict[str, float], name: str, fn: Callable[..., R], *args: Any) -> R:
    """fn(*args), its CPU seconds added to cpu[name]."""
    t = time.process_time()
    out = fn(*args)
    cpu[name] += time.process_time() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--performances", type=int, default=12, help="performances timed (spread over the capture)")
    ap.add_argument("--subjects", type=int, default=2, help="subjects simulated end to end with 1 and 2 workers")
    ap.add_argument("--json", type=Path, help="also write the figures here (e.g. reports/bench/capture.json)")
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    cv2.setNumThreads(1)
    p = load_params(Layout.discover().params_file).capture
    perfs = plan_performances(p, subject_ids(p.seed, p.n_subjects))
    sample = [perfs[i] for i in np.linspace(0, len(perfs) - 1, args.performances).astype(int)]
    frames_per_perf = p.n_frames * len(p.poses)

    cpu: dict[str, float] = {"stage": 0.0, "render": 0.0, "floor: write": 0.0, "floor: noise": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "takes").mkdir()
        (folder / "_truth").mkdir()
        render_performance(p, sample[0], folder / "takes", folder / "_truth")  # warm-up: imports, caches
        for perf in sample:
            _time(cpu, "stage", render_performance, p, perf, folder / "takes", folder / "_truth")
            rendered = _time(cpu, "render", render_takes, p, perf)
            _time(cpu, "floor: write", _write, p, rendered, folder)
            _time(cpu, "floor: noise", _noise, p, perf)
    n = frames_per_perf * len(sample)
    rows = {name: n / s for name, s in cpu.items()}
    floor = rows["floor: write"]
    print(f"capture: {len(sample)} performances, {n} frames of {p.frame_size} px, one core (CPU time)")
    print(f"{'':14s} {'frames/s':>10s} {'ms/frame':>9s} {'x floor':>8s}")
    for name, fps in rows.items():
        print(f"{name:14s} {fps:10.1f} {1000 / fps:9.2f} {floor / fps:8.2f}")

    e2e = []
    for workers in (1, 2):
        q = p.model_copy(
            update={"n_subjects": args.subjects, "n_withdrawn": 0, "n_no_public_release": 0, "workers": workers}
        )
        with tempfile.TemporaryDirectory() as tmp:
            rep = simulate(q, Path(tmp) / "raw")
        e2e.append({k: rep[k] for k in ("workers", "n_takes", "n_frames", "frames_per_s", "frames_per_s_per_core")})
        print(
            f"simulate {rep['n_takes']} takes / {rep['n_frames']} frames with {workers} worker(s): "
            f"{rep['frames_per_s']:.1f} frames/s wall, {rep['frames_per_s_per_core']:.1f} frames/s per core"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "commit": git_commit(ROOT, "pipeline/capture"),
            "frame_size": p.frame_size,
            "frames_timed": n,
            "frames_per_s_per_core": {k: round(v, 1) for k, v in rows.items()},
            "floor": "floor: write (mp4v encoding and truth .npz of the same frames)",
            "simulate": e2e,
        }
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
