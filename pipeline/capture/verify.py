"""Does a real face detector find the simulated faces? MTCNN detection rate per mode of variation.

A frame counts as detected when the detector's best face has its box around the true nose tip;
its 5 points are compared with the simulator's truth (error normalised by the true inter-ocular
distance). Rates are reported per pose, per illumination, per mode and per skin tone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline import paths
from pipeline.align.accuracy import nme
from pipeline.align.detectors.mtcnn import MTCNN
from pipeline.modes import mode_id, pose_id
from pipeline.params import CaptureVerifyParams

log = logging.getLogger(__name__)
_detector: MTCNN | None = None


def _init(p: CaptureVerifyParams) -> None:
    global _detector
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _detector = MTCNN(min_face_px=p.min_face_px, thresholds=p.thresholds, device="cpu")


def frame_result(det_boxes: list[np.ndarray], det_points: list[np.ndarray], truth5: np.ndarray) -> tuple[bool, float | None]:
    """(detected, normalised mean error of the 5 points) for one frame, given detections best-first."""
    nose = truth5[2]
    for box, pts in zip(det_boxes, det_points):
        if box[0] <= nose[0] <= box[2] and box[1] <= nose[1] <= box[3]:
            return True, float(nme(pts, truth5))
    return False, None


def verify_take(args: tuple[Path, Path, int]) -> list[tuple[int, bool, float | None]]:
    """Detect on every nth frame of one take; (frame index, detected, nme) per sampled frame."""
    video, truth_file, every = args
    truth5 = np.load(truth_file)["landmarks5"]
    cap = cv2.VideoCapture(str(video))
    out = []
    t = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if t % every == 0:
            dets = _detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            out.append((t, *frame_result([d.box for d in dets], [d.landmarks for d in dets], truth5[t])))
        t += 1
    cap.release()
    return out


def _summarise(groups: dict[str, list[tuple[bool, float | None]]]) -> dict[str, dict]:
    out = {}
    for key in sorted(groups):
        res = groups[key]
        nmes = [n for d, n in res if d and n is not None]
        out[key] = {
            "frames": len(res),
            "detection_rate": round(sum(d for d, _ in res) / len(res), 4),
            "nme_mean": round(float(np.mean(nmes)), 4) if nmes else None,
        }
    return out


def verify(raw: Path, p: CaptureVerifyParams, workers: int) -> dict:
    """Run the detector over the simulated capture; figures per pose, illumination, mode, skin tone."""
    capture_log = pd.read_csv(raw / paths.CAPTURE_LOG_NAME)
    truth = pd.read_csv(raw / paths.TRUTH_SUBDIR / "takes.csv").set_index("take_id")
    jobs = [(raw / f, raw / paths.TRUTH_SUBDIR / f"{t}.npz", p.every_nth_frame) for t, f in zip(capture_log["take_id"], capture_log["file"])]
    with ProcessPoolExecutor(max_workers=workers, initializer=_init, initargs=(p,)) as pool:
        results = list(tqdm(pool.map(verify_take, jobs, chunksize=4), total=len(jobs), desc="mtcnn", unit="take"))
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for row, res in zip(capture_log.itertuples(index=False), results):
        keys = {
            "pose": pose_id(row.yaw, row.pitch),
            "illumination": row.illumination,
            "mode": mode_id(row.yaw, row.pitch, row.illumination),
            "skin_tone": f"tone{int(truth.loc[row.take_id, 'skin_tone_index'])}",
            "expression": row.prompted_expression,
        }
        for _, detected, err in res:
            groups["overall"]["all"].append((detected, err))
            for kind, key in keys.items():
                groups[kind][key].append((detected, err))
    report = {kind: _summarise(g) for kind, g in groups.items()}
    report["detector"] = {"name": "mtcnn", "min_face_px": p.min_face_px, "thresholds": list(p.thresholds),
                          "every_nth_frame": p.every_nth_frame}
    return report
