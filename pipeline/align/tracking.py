"""Keyframe detection with optical-flow tracking in between.

Detecting every frame is slow and jittery; tracking alone drifts. The tracker detects on keyframes,
propagates the 5 points with pyramidal Lucas-Kanade between them (checked forward-backward), and
re-detects as soon as the track is lost. In a frame with several faces it keeps the one consistent
with the track (the subject), not merely the largest. Dark frames get a contrast stretch before
detection only; the aligned crops come from the untouched frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.align.detectors.base import Detection, FaceDetector

SOURCE_NONE, SOURCE_DETECT, SOURCE_TRACK = 0, 1, 2
_LK = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


@dataclass(frozen=True)
class TrackerConfig:
    keyframe_every: int = 4       # detect on every nth frame (1: detect every frame)
    max_fb_error: float = 0.15    # forward-backward LK error allowed, as a fraction of the eye distance
    max_jump: float = 0.6         # detection within this fraction of the eye distance of the track
    dark_threshold: float = 70.0  # mean luma below which a frame is stretched before detection


@dataclass(frozen=True)
class FrameTrack:
    points: np.ndarray | None     # 5 x 2 in frame pixels, or None when the face was not found
    score: float                  # detector confidence on detected frames, NaN when tracked
    source: int
    stretched: bool
    n_faces: int


def contrast_stretch(rgb: np.ndarray) -> np.ndarray:
    """Percentile stretch of luma plus CLAHE: lifts a dim face into the detector's working range."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    L = lab[..., 0].astype(np.float32)
    lo, hi = np.percentile(L, (1, 99))
    L = np.clip((L - lo) * (255.0 / max(hi - lo, 1.0)), 0, 255).astype(np.uint8)
    lab[..., 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(L)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[0] - points[1]))


def select_face(dets: list[Detection], predicted: np.ndarray | None, max_jump: float) -> Detection | None:
    """The subject's face: nearest to the track when there is one, else the largest."""
    if not dets:
        return None
    if predicted is None:
        return max(dets, key=lambda d: (d.size, d.score))
    scale = max(eye_distance(predicted), 1.0)
    dist = [float(np.linalg.norm(d.landmarks - predicted, axis=1).mean()) / scale for d in dets]
    best = int(np.argmin(dist))
    return dets[best] if dist[best] <= max_jump else None


class FaceTracker:
    """Feed frames in order; each `step` returns where the subject's 5 points are."""

    def __init__(self, detector: FaceDetector, cfg: TrackerConfig) -> None:
        self.detector, self.cfg = detector, cfg
        self.prev_gray: np.ndarray | None = None
        self.prev_points: np.ndarray | None = None
        self.since_detect = 0

    def _flow(self, gray: np.ndarray) -> np.ndarray | None:
        """LK-propagated points, or None if the forward-backward check fails (track lost)."""
        if self.prev_points is None or self.prev_gray is None:
            return None
        p0 = self.prev_points.astype(np.float32).reshape(-1, 1, 2)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(self.prev_gray, gray, p0, None, **_LK)
        if p1 is None or not st1.all():
            return None
        back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self.prev_gray, p1, None, **_LK)
        if back is None or not st2.all():
            return None
        fb = np.linalg.norm(back.reshape(-1, 2) - self.prev_points, axis=1).max()
        if fb > self.cfg.max_fb_error * max(eye_distance(self.prev_points), 1.0):
            return None
        return p1.reshape(-1, 2).astype(np.float64)

    def step(self, rgb: np.ndarray) -> FrameTrack:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        tracked = self._flow(gray)
        keyframe = self.since_detect + 1 >= self.cfg.keyframe_every or tracked is None
        result: FrameTrack
        if keyframe:
            stretched = float(gray.mean()) < self.cfg.dark_threshold
            dets = self.detector.detect(contrast_stretch(rgb) if stretched else rgb)
            predicted = tracked if tracked is not None else self.prev_points
            face = select_face(dets, predicted, self.cfg.max_jump)
            if face is None and predicted is not None and tracked is None:
                face = select_face(dets, None, self.cfg.max_jump)  # lost for long: take the best new face
            if face is not None:
                result = FrameTrack(face.landmarks.astype(np.float64), face.score, SOURCE_DETECT, stretched, len(dets))
                self.since_detect = 0
            elif tracked is not None:
                result = FrameTrack(tracked, float("nan"), SOURCE_TRACK, stretched, len(dets))
                self.since_detect += 1
            else:
                result = FrameTrack(None, float("nan"), SOURCE_NONE, stretched, len(dets))
        else:
            result = FrameTrack(tracked, float("nan"), SOURCE_TRACK, False, -1)
            self.since_detect += 1
        self.prev_gray, self.prev_points = gray, result.points
        return result


def smooth_points(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] temporal filter within each run of valid frames: removes detector jitter."""
    out = points.copy()
    for t in range(len(points)):
        if not valid[t]:
            continue
        acc, w = 2 * points[t], 2.0
        for s in (t - 1, t + 1):
            if 0 <= s < len(points) and valid[s]:
                acc, w = acc + points[s], w + 1
        out[t] = acc / w
    return out
