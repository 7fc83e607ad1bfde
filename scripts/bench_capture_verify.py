"""Benchmark capture_verify beside its floor, and beside the detection it no longer repeats.

capture_verify scores the detections align recorded (data/aligned) against the simulator's truth
(data/raw/_truth), so it needs `dvc repro align` first; it reads both folders and writes nothing.

- `stage`: `verify()` over the whole capture, as the stage runs it.
- `floor: read`: loading the same arrays (align's per-frame record and the truth) and nothing else.
- `before: MTCNN`: what the stage did before, per sampled frame: decode the take and run the detector
  on every nth frame (timed on a few takes, extrapolated to the same frames). That work now happens
  once, in align.

CPU seconds of this process, one thread each for torch and OpenCV. Prints a table; asserts nothing.

    python scripts/bench_capture_verify.py [--mtcnn-takes 6]
"""

from __future__ import annotations

import argparse
import logging
import time

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.align.detectors.mtcnn import MTCNN
from pipeline.capture.verify import ALIGNED_KEYS, verify
from pipeline.layout import CAPTURE_LOG_NAME, TRUTH_SUBDIR, Layout
from pipeline.params import load_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mtcnn-takes", type=int, default=6, help="takes the old per-frame detection is timed on")
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    layout = Layout.discover()
    params = load_params(layout.params_file)
    raw, aligned, every = layout.raw, layout.aligned, params.capture_verify.every_nth_frame
    if not aligned.is_dir():
        raise SystemExit(f"{aligned}: no aligned takes; run `dvc repro align` first")

    t = time.process_time()
    report = verify(raw, aligned, params.capture_verify, params.align)
    stage_s = time.process_time() - t
    frames = report["overall"]["all"]["frames"]

    log = pd.read_csv(raw / CAPTURE_LOG_NAME)
    t = time.process_time()
    for take in log["take_id"]:
        f = aligned / f"{take}.npz"
        if f.exists():
            with np.load(f) as a, np.load(raw / TRUTH_SUBDIR / f"{take}.npz") as z:
                _ = [a[k] for k in ALIGNED_KEYS], z["landmarks68"], z["landmarks5"]
    floor_s = time.process_time() - t

    det = MTCNN(min_face_px=params.align.min_face_px, device="cpu")
    detected = 0
    t = time.process_time()
    for file in log["file"].iloc[:: max(1, len(log) // args.mtcnn_takes)][: args.mtcnn_takes]:
        cap = cv2.VideoCapture(str(raw / file))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % every == 0:
                det.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                detected += 1
            i += 1
        cap.release()
    mtcnn_fps = detected / (time.process_time() - t)

    rows = {"stage": frames / stage_s, "floor: read": frames / floor_s, "before: MTCNN": mtcnn_fps}
    print(f"capture_verify: {frames} sampled frames (every {every}th) of {len(log)} takes, one core (CPU time)")
    print(f"{'':14s} {'frames/s':>10s} {'total s':>8s} {'x floor':>8s}")
    for name, fps in rows.items():
        print(f"{name:14s} {fps:10.1f} {frames / fps:8.2f} {rows['floor: read'] / fps:8.2f}")


if __name__ == "__main__":
    main()
