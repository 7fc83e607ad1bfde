"""Does a real face detector find the simulated faces? Detection rate per mode of variation.

The detector is the one `align` runs: this stage reads the detections align recorded in
data/aligned/<take_id>.npz (its per-frame `source`, `n_faces` and the detector's own 5 points,
`raw_points`) instead of running MTCNN over the keyframes a second time. On every nth frame where
align ran the detector, the frame counts as detected when the face align took from the detector is
the simulated one: its nose point inside the true face's box (the box of the simulator's 68 true
landmarks). Its 5 points are compared with the simulator's truth (error normalised by the true
inter-ocular distance). Rates are reported per pose, illumination, mode, skin tone and expression.
A sampled frame that align only tracked (its keyframes move after a lost track) is not scored; the
report counts them (`detector.sampled_frames_align_only_tracked`).

What this measures is the detector as the pipeline uses it: dark frames contrast-stretched first
(`align.dark_threshold`), and the tracked subject's face chosen among the detections.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.align.accuracy import nme
from pipeline.align.tracking import SOURCE_DETECT
from pipeline.errors import environment_fault, is_environment_fault
from pipeline.layout import CAPTURE_LOG_NAME, TRUTH_SUBDIR
from pipeline.modes import mode_id, pose_id
from pipeline.params import AlignParams, CaptureVerifyParams

log = logging.getLogger(__name__)

FrameResult = tuple[int, bool, float | None, bool]  # frame, detected, NME (if detected), contrast-stretched
ALIGNED_KEYS = ("raw_points", "source", "n_faces", "stretched")


def true_box(landmarks68: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of the simulator's 68 true landmarks: where the face is."""
    return np.concatenate([landmarks68.min(axis=0), landmarks68.max(axis=0)])


def frame_results(
    aligned: dict[str, np.ndarray], truth68: np.ndarray, truth5: np.ndarray, every: int
) -> tuple[list[FrameResult], int]:
    """Per sampled frame of one take: (frame, detected, NME of the detector's 5 points, stretched);
    and the number of sampled frames on which align did not run the detector.

    Sampled: every `every`th frame that the truth covers; scored where align ran the detector
    (`n_faces` >= 0; it is -1 on frames align only tracked).
    """
    source, n_faces, points = aligned["source"], aligned["n_faces"], aligned["raw_points"]
    stretched = aligned["stretched"]
    out: list[FrameResult] = []
    untested = 0
    for t in range(0, min(len(source), len(truth5)), every):
        if n_faces[t] < 0:  # align only tracked it (its keyframes moved after a lost track)
            untested += 1
            continue
        detected, err = False, None
        if source[t] == SOURCE_DETECT:
            x0, y0, x1, y1 = true_box(truth68[t])
            nose = points[t, 2]
            if x0 <= nose[0] <= x1 and y0 <= nose[1] <= y1:
                detected, err = True, float(nme(points[t], truth5[t]))
        out.append((t, detected, err, bool(stretched[t])))
    return out, untested


def verify_take(args: tuple[Path, Path, int]) -> tuple[list[FrameResult], int, str | None]:
    """One take's sampled frames from align's record and the truth: (results, sampled frames align
    only tracked, None), or ([], 0, why) when the take cannot be verified (no truth, unreadable, no
    sampled frame on which align ran the detector).

    A fault of the machine (no memory, a full or failing disk) is raised as `EnvironmentFault`.
    """
    aligned_file, truth_file, every = args
    try:
        with np.load(aligned_file) as a:
            aligned = {k: a[k] for k in ALIGNED_KEYS}
        with np.load(truth_file) as z:
            truth68, truth5 = z["landmarks68"], z["landmarks5"]
    except (OSError, ValueError, KeyError) as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"verifying {Path(str(aligned_file)).stem}") from e
        return [], 0, f"{type(e).__name__}: {e}"
    out, untested = frame_results(aligned, truth68, truth5, every)
    return (out, untested, None) if out else ([], 0, "align ran the detector on none of the sampled frames")


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


def verify(raw: Path, aligned: Path, p: CaptureVerifyParams, a: AlignParams) -> dict:
    """Align's detections on the simulated capture against the truth; figures per pose, illumination,
    mode, skin tone and expression.

    A take that cannot be verified (quarantined by ingest, hence never aligned; no truth) is listed
    under `skipped` with its reason and the others go on; a fault of the machine stops the stage.
    """
    capture_log = pd.read_csv(raw / CAPTURE_LOG_NAME)
    truth = pd.read_csv(raw / TRUTH_SUBDIR / "takes.csv").set_index("take_id")
    if not aligned.is_dir():
        raise FileNotFoundError(f"{aligned}: no aligned takes; capture_verify reads align's detections (run align)")
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    skipped: dict[str, str] = {}
    tones = truth["skin_tone_index"].to_dict()
    stretched = tracked_only = 0
    for row in capture_log.to_dict("records"):
        take = str(row["take_id"])
        afile = aligned / f"{take}.npz"
        if not afile.exists():
            skipped[take] = "not aligned (quarantined by ingest, or align failed on it)"
            continue
        res, untested, why = verify_take((afile, raw / TRUTH_SUBDIR / f"{take}.npz", p.every_nth_frame))
        if why is not None:
            log.warning("%s: not verified (%s); the other takes go on", take, why)
            skipped[take] = why
            continue
        keys = {
            "pose": pose_id(row["yaw"], row["pitch"]),
            "illumination": str(row["illumination"]),
            "mode": mode_id(row["yaw"], row["pitch"], row["illumination"]),
            "skin_tone": f"tone{int(tones[take])}",
            "expression": str(row["prompted_expression"]),
        }
        tracked_only += untested
        for _, detected, err, was_stretched in res:
            stretched += was_stretched
            groups["overall"]["all"].append((detected, err))
            for kind, key in keys.items():
                groups[kind][key].append((detected, err))
    report: dict[str, Any] = {kind: _summarise(g) for kind, g in groups.items()}
    report["detector"] = {
        "name": a.detector,
        "min_face_px": a.min_face_px,
        "every_nth_frame": p.every_nth_frame,
        "keyframe_every": a.keyframe_every,
        "detections_from": "align",
        "frames_contrast_stretched": stretched,
        "sampled_frames_align_only_tracked": tracked_only,
    }
    report["skipped"] = dict(sorted(skipped.items()))
    return report
