"""Keyframe detection with optical-flow tracking in between.

Detecting every frame is slow and jittery; tracking alone drifts. The tracker detects on keyframes,
propagates the 5 points with pyramidal Lucas-Kanade between them (checked forward-backward), and
re-detects as soon as the track is lost. In a frame with several faces it keeps the one consistent
with the track (the subject). When the subject was missed (occluded, out of frame, a missed
detection) it is re-acquired by position (near where it was last seen) AND appearance (normalised
correlation of a small aligned patch with the subject's last detected face), never by size: a
larger bystander who walks in while the subject is missed is not taken. Only the very first face
of a take is chosen without a track (the largest: the subject the rig frames).

Every point is snapped to the 1/64-pixel grid as it comes out of the detector or the flow, so the
last-bit differences of float kernels between CPUs do not reach the decisions or the crops.
Dark frames get a contrast stretch before detection only; the aligned crops come from the
untouched frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.align.detectors.base import Detection, FaceDetector
from pipeline.align.template import similarity, snap, template, warp

SOURCE_NONE, SOURCE_DETECT, SOURCE_TRACK = 0, 1, 2
_LK = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


@dataclass(frozen=True)
class TrackerConfig:
    keyframe_every: int = 4  # detect on every nth frame (1: detect every frame)
    max_fb_error: float = 0.15  # forward-backward LK error allowed, as a fraction of the eye distance
    max_jump: float = 0.6  # detection within this fraction of the eye distance of the track
    dark_threshold: float = 70.0  # mean luma below which a frame is stretched before detection
    reacquire_radius: float = 1.5  # a lost subject is looked for within this many eye distances (grows with the gap)
    min_appearance: float = 0.5  # normalised correlation with the subject's last face needed to re-acquire


@dataclass(frozen=True)
class FrameTrack:
    points: np.ndarray | None  # 5 x 2 in frame pixels, or None when the face was not found
    score: float  # detector confidence on detected frames, NaN when tracked
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
    return math.hypot(float(points[0][0] - points[1][0]), float(points[0][1] - points[1][1]))


def mean_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean point-to-point distance of two 5-point sets (scalar libm: the same on every CPU)."""
    return math.fsum(math.hypot(float(p[0] - q[0]), float(p[1] - q[1])) for p, q in zip(a, b)) / len(a)


def snapped(d: Detection) -> Detection:
    """A detection on the 1/64-pixel grid, its score on a 1/4096 grid."""
    return Detection(box=snap(d.box), score=round(float(d.score) * 4096) / 4096, landmarks=snap(d.landmarks))


APPEARANCE_PX = 32  # side of the aligned grey patch the subject's appearance is compared on


def appearance(gray: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm aligned grey patch of a face: compared by dot product (correlation)."""
    patch = warp(gray, similarity(points, template(112) * (APPEARANCE_PX / 112)), APPEARANCE_PX).astype(np.float64)
    patch -= patch.mean()
    norm = float(np.sqrt((patch * patch).sum()))
    return (patch / norm).ravel() if norm > 0 else patch.ravel()


def select_face(dets: list[Detection], predicted: np.ndarray | None, max_jump: float) -> Detection | None:
    """The subject's face while tracked: the detection nearest the track, if near enough.

    With no track at all (the first face of a take) the largest; a subject that was lost is found
    again by `reacquire`, never by this size rule.
    """
    if not dets:
        return None
    if predicted is None:
        return max(dets, key=lambda d: (d.size, d.score))
    scale = max(eye_distance(predicted), 1.0)
    dist = [mean_distance(d.landmarks, predicted) / scale for d in dets]
    best = min(range(len(dets)), key=lambda i: dist[i])
    return dets[best] if dist[best] <= max_jump else None


def reacquire(
    dets: list[Detection],
    gray: np.ndarray,
    last_points: np.ndarray,
    last_look: np.ndarray,
    gap: int,
    cfg: TrackerConfig,
) -> Detection | None:
    """The lost subject among `dets`: near where it was last seen and looking like it, else None.

    The search radius grows with the frames missed; candidates are ranked by distance (in radii)
    plus dissimilarity. Size plays no part, so a larger bystander is never taken for the subject.
    """
    scale = max(eye_distance(last_points), 1.0)
    radius = cfg.reacquire_radius * (1.0 + 0.25 * max(gap - 1, 0))
    best, best_cost = None, math.inf
    for d in dets:
        dist = mean_distance(d.landmarks, last_points) / scale
        if dist > radius:
            continue
        look = float(appearance(gray, d.landmarks) @ last_look)
        if look < cfg.min_appearance:
            continue
        cost = dist / radius + (1.0 - look)
        if cost < best_cost:
            best, best_cost = d, cost
    return best


class FaceTracker:
    """Feed frames in order; each `step` returns where the subject's 5 points are."""

    def __init__(self, detector: FaceDetector, cfg: TrackerConfig) -> None:
        self.detector, self.cfg = detector, cfg
        self.prev_gray: np.ndarray | None = None
        self.prev_points: np.ndarray | None = None
        self.since_detect = 0
        self.last_points: np.ndarray | None = None  # where the subject was last found
        self.last_look: np.ndarray | None = None  # its appearance at the last detection
        self.gap = 0  # frames since it was last found

    def _flow(self, gray: np.ndarray) -> np.ndarray | None:
        """LK-propagated points, or None if the forward-backward check fails (track lost)."""
        if self.prev_points is None or self.prev_gray is None:
            return None
        p0 = self.prev_points.astype(np.float32).reshape(-1, 1, 2)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(self.prev_gray, gray, p0, None, **_LK)  # type: ignore[call-overload]
        if p1 is None or not st1.all():
            return None
        back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self.prev_gray, p1, None, **_LK)  # type: ignore[call-overload]
        if back is None or not st2.all():
            return None
        back, p1 = snap(back.reshape(-1, 2)), snap(p1.reshape(-1, 2))
        fb = max(math.hypot(float(b[0] - p[0]), float(b[1] - p[1])) for b, p in zip(back, self.prev_points))
        if fb > self.cfg.max_fb_error * max(eye_distance(self.prev_points), 1.0):
            return None
        return p1

    def step(self, rgb: np.ndarray) -> FrameTrack:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        tracked = self._flow(gray)
        keyframe = self.since_detect + 1 >= self.cfg.keyframe_every or tracked is None
        result: FrameTrack
        if keyframe:
            stretched = float(gray.mean()) < self.cfg.dark_threshold
            dets = [snapped(d) for d in self.detector.detect(contrast_stretch(rgb) if stretched else rgb)]
            if tracked is not None:
                face = select_face(dets, tracked, self.cfg.max_jump)
            elif self.last_points is None or self.last_look is None:
                face = select_face(dets, None, self.cfg.max_jump)  # the take's first face
            else:
                face = reacquire(dets, gray, self.last_points, self.last_look, self.gap + 1, self.cfg)
            if face is not None:
                self.last_look = appearance(gray, face.landmarks)
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
        if result.points is not None:
            self.last_points, self.gap = result.points, 0
        else:
            self.gap += 1
        return result


def smooth_one(prev: np.ndarray | None, cur: np.ndarray, nxt: np.ndarray | None) -> np.ndarray:
    """The [1, 2, 1] filter at one frame; a missing neighbour (None) is left out of the weights."""
    acc, w = 2 * cur, 2.0
    for s in (prev, nxt):
        if s is not None:
            acc, w = acc + s, w + 1
    return acc / w


def smooth_points(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A [1, 2, 1] temporal filter within each run of valid frames: removes detector jitter."""
    out = points.copy()
    T = len(points)
    for t in range(T):
        if valid[t]:
            out[t] = smooth_one(
                points[t - 1] if t > 0 and valid[t - 1] else None,
                points[t],
                points[t + 1] if t + 1 < T and valid[t + 1] else None,
            )
    return out
