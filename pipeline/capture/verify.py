"""Does a real face detector find the simulated faces? MTCNN detection rate per mode of variation.

A frame counts as detected when the detector's best face has its box around the true nose tip;
its 5 points are compared with the simulator's truth (error normalised by the true inter-ocular
distance). Rates are reported per pose, per illumination, per mode and per skin tone.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.align.accuracy import nme
from pipeline.align.detectors.mtcnn import MTCNN
from pipeline.errors import environment_fault, is_environment_fault
from pipeline.layout import CAPTURE_LOG_NAME, TRUTH_SUBDIR
from pipeline.modes import mode_id, pose_id
from pipeline.parallel import Executor, pmap
from pipeline.params import CaptureVerifyParams

log = logging.getLogger(__name__)

FrameResult = tuple[int, bool, float | None]
_detectors: dict[tuple, MTCNN] = {}  # one detector per worker process and settings, built on first use


def _detector(p: CaptureVerifyParams) -> MTCNN:
    key = (p.min_face_px, tuple(p.thresholds))
    if key not in _detectors:
        _detectors[key] = MTCNN(min_face_px=p.min_face_px, thresholds=p.thresholds, device="cpu")
    return _detectors[key]


def frame_result(
    det_boxes: list[np.ndarray], det_points: list[np.ndarray], truth5: np.ndarray
) -> tuple[bool, float | None]:
    """(detected, normalised mean error of the 5 points) for one frame, given detections best-first."""
    nose = truth5[2]
    for box, pts in zip(det_boxes, det_points):
        if box[0] <= nose[0] <= box[2] and box[1] <= nose[1] <= box[3]:
            return True, float(nme(pts, truth5))
    return False, None


def _detect_frames(video: Path, truth5: np.ndarray, every: int, detector: MTCNN) -> list[FrameResult]:
    cap = cv2.VideoCapture(str(video))
    out = []
    t = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if t % every == 0:
                dets = detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                out.append((t, *frame_result([d.box for d in dets], [d.landmarks for d in dets], truth5[t])))
            t += 1
    finally:
        cap.release()
    return out


def verify_take(args: tuple[Path, Path, int, CaptureVerifyParams]) -> tuple[list[FrameResult], str | None]:
    """Detect on every nth frame of one take: ((frame index, detected, nme) per sampled frame, None), or
    ([], why) when the take cannot be verified (no truth, no decodable frame, truth shorter than the video).

    One thread each for torch and OpenCV (one worker per core), restored afterwards.
    """
    video, truth_file, every, p = args
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        truth5 = np.load(truth_file)["landmarks5"]
        out = _detect_frames(video, truth5, every, _detector(p))
    except (OSError, ValueError, KeyError, IndexError) as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"verifying {video.name}") from e
        return [], f"{type(e).__name__}: {e}"
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    return (out, None) if out else ([], "no frame could be decoded")


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


def verify(raw: Path, p: CaptureVerifyParams, executor: Executor | int) -> dict:
    """Run the detector over the simulated capture; figures per pose, illumination, mode, skin tone.

    A take that cannot be verified is listed under `skipped` with its reason and the others go on;
    a fault of the machine stops the map (`EnvironmentFault`).
    """
    capture_log = pd.read_csv(raw / CAPTURE_LOG_NAME)
    truth = pd.read_csv(raw / TRUTH_SUBDIR / "takes.csv").set_index("take_id")
    jobs = [
        (raw / f, raw / TRUTH_SUBDIR / f"{t}.npz", p.every_nth_frame, p)
        for t, f in zip(capture_log["take_id"], capture_log["file"])
    ]
    results = list(pmap(verify_take, jobs, executor, desc="mtcnn", unit="take", stage="capture_verify"))
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    skipped: dict[str, str] = {}
    tones = truth["skin_tone_index"].to_dict()
    for row, (res, why) in zip(capture_log.to_dict("records"), results):
        take = str(row["take_id"])
        if why is not None:
            log.warning("%s: not verified (%s); the other takes go on", take, why)
            skipped[take] = why
            continue
        keys = {
            "pose": pose_id(row["yaw"], row["pitch"]),
            "illumination": str(row["illumination"]),
            "mode": mode_id(row["yaw"], row["pitch"], row["illumination"]),
            "skin_tone": f"tone{int(tones[row['take_id']])}",
            "expression": str(row["prompted_expression"]),
        }
        for _, detected, err in res:
            groups["overall"]["all"].append((detected, err))
            for kind, key in keys.items():
                groups[kind][key].append((detected, err))
    report: dict[str, Any] = {kind: _summarise(g) for kind, g in groups.items()}
    report["detector"] = {
        "name": "mtcnn",
        "min_face_px": p.min_face_px,
        "thresholds": list(p.thresholds),
        "every_nth_frame": p.every_nth_frame,
    }
    report["skipped"] = dict(sorted(skipped.items()))
    return report
