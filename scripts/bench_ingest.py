"""Benchmark ingest on a generated tree of frame-folder takes: frames per second, and peak memory.

Builds `--takes` folders of `--frames` PNG frames (96x96, noise + a moving disc) with a capture log
and consent table in a temporary folder, runs the ingest stage on it, and prints figures; asserts
nothing. Run with `python scripts/bench_ingest.py [--takes 100 --frames 100 --workers 2]`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.ingest.run import ingest
from pipeline.layout import Layout
from pipeline.params import load_params


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--takes", type=int, default=100)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    p = load_params(Layout.discover().params_file)
    p = p.model_copy(update={"ingest": p.ingest.model_copy(update={"workers": args.workers})})
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        t = time.perf_counter()
        build_tree(raw, args.takes, args.frames)
        built = time.perf_counter() - t
        t = time.perf_counter()
        _, report = ingest(p, raw)
        took = time.perf_counter() - t
    n = args.takes * args.frames
    peak_parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    logging.getLogger("bench").warning(
        "%d takes x %d frames = %d frames: tree built in %.1f s; ingest %.2f s = %.0f frames/s with %d workers "
        "(%d accepted); peak RSS parent %.0f MiB, largest worker %.0f MiB",
        args.takes,
        args.frames,
        n,
        built,
        took,
        n / took,
        args.workers,
        report["accepted"],
        peak_parent,
        peak_child,
    )


if __name__ == "__main__":
    main()
