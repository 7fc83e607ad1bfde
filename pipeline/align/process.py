"""Align one take: stream its frames, track the face, crop onto the template, write one .npz.

The same function runs in a local process pool and on Dask workers, so both executors give
byte-identical outputs. Frames are streamed: memory holds one take's crops, never a dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.align.detectors import make_detector
from pipeline.align.quality import blur_score, estimate_yaw, longest_gap
from pipeline.align.template import align_crop
from pipeline.align.tracking import SOURCE_DETECT, SOURCE_NONE, FaceTracker, TrackerConfig, eye_distance, smooth_points
from pipeline.utils.io import atomic_path

log = logging.getLogger(__name__)
ALGO_VERSION = "1"  # bump when the processing changes in a way params do not capture
_detectors: dict[str, object] = {}


@dataclass(frozen=True)
class AlignConfig:
    """Everything that changes an aligned output; its hash is part of every take's cache key."""

    detector: str
    detector_options: tuple[tuple[str, object], ...]
    crop_size: int
    tracker: TrackerConfig

    def key(self) -> str:
        blob = json.dumps({"algo": ALGO_VERSION} | asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def take_key(content_sha256: str, cfg: AlignConfig) -> str:
    """A take is processed once per (content hash, alignment parameters)."""
    return hashlib.sha256(f"{content_sha256}:{cfg.key()}".encode()).hexdigest()[:32]


def _detector(cfg: AlignConfig):
    """One detector per worker process, built on first use (weights load once, not per take)."""
    k = cfg.key()
    if k not in _detectors:
        import torch

        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        _detectors.clear()
        _detectors[k] = make_detector(cfg.detector, **dict(cfg.detector_options))
    return _detectors[k]


def align_take(video: Path, expected_frames: int, cfg: AlignConfig) -> dict[str, np.ndarray]:
    """Track and align every frame of one video; returns the arrays of the take's .npz."""
    tracker = FaceTracker(_detector(cfg), cfg.tracker)
    S = cfg.crop_size
    raw, score, source, stretched, n_faces, frames_rgb_shape = [], [], [], [], [], None
    crops_src: list[np.ndarray] = []
    cap = cv2.VideoCapture(str(video))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            frames_rgb_shape = rgb.shape
            r = tracker.step(rgb)
            raw.append(r.points if r.points is not None else np.full((5, 2), np.nan))
            score.append(r.score)
            source.append(r.source)
            stretched.append(r.stretched)
            n_faces.append(r.n_faces)
            crops_src.append(rgb)  # one take of small frames; crops need the smoothed points first
    finally:
        cap.release()
    T = len(raw)
    raw_pts = np.array(raw, dtype=np.float64).reshape(T, 5, 2)
    valid = np.array([s != SOURCE_NONE for s in source], dtype=bool)
    pts = smooth_points(raw_pts, valid)
    frames = np.zeros((T, S, S, 3), np.uint8)
    mats = np.full((T, 2, 3), np.nan, np.float32)
    blur = np.full(T, np.nan, np.float32)
    bright = np.full(T, np.nan, np.float32)
    iod = np.full(T, np.nan, np.float32)
    yaw = np.full(T, np.nan, np.float32)
    jitter = np.full(T, np.nan, np.float32)
    for t in range(T):
        if not valid[t]:
            continue
        crop, M = align_crop(crops_src[t], pts[t], S)
        frames[t], mats[t] = crop, M
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        blur[t], bright[t] = blur_score(gray), float(gray.mean())
        iod[t] = eye_distance(pts[t])
        yaw[t] = estimate_yaw(pts[t])
        jitter[t] = float(np.linalg.norm(raw_pts[t] - pts[t], axis=1).mean() / max(iod[t], 1e-6))
    return {
        "frames": frames, "points": pts.astype(np.float32), "raw_points": raw_pts.astype(np.float32),
        "valid": valid, "source": np.array(source, np.uint8), "score": np.array(score, np.float32),
        "stretched": np.array(stretched, bool), "n_faces": np.array(n_faces, np.int16), "matrices": mats,
        "blur": blur, "brightness": bright, "iod_px": iod, "yaw_est": yaw, "jitter": jitter,
        "expected_frames": np.array(expected_frames), "frame_shape": np.array(frames_rgb_shape or (0, 0, 0)),
    }


def summarise(arrays: dict[str, np.ndarray]) -> dict:
    """Per-take figures from a take's arrays (also used when a take is not reprocessed)."""
    valid = arrays["valid"]
    T = len(valid)

    def med(name: str) -> float | None:
        v = arrays[name][valid]
        return float(np.median(v)) if len(v) else None

    return {
        "decoded_frames": T,
        "expected_frames": int(arrays["expected_frames"]),
        "valid_frames": int(valid.sum()),
        "detection_rate": float(valid.mean()) if T else 0.0,
        "longest_gap": longest_gap(valid) if T else int(arrays["expected_frames"]),
        "detected_frames": int((arrays["source"] == SOURCE_DETECT).sum()),
        "stretched_frames": int(arrays["stretched"].sum()),
        "median_iod_px": med("iod_px"),
        "median_blur": med("blur"),
        "median_brightness": med("brightness"),
        "median_yaw_est": med("yaw_est"),
        "mean_jitter": float(np.nanmean(arrays["jitter"])) if valid.any() else None,
    }


def process_take(job: dict) -> dict:
    """Worker entry point: align, write `<out>` atomically with its cache key, return the summary."""
    cfg: AlignConfig = job["cfg"]
    arrays = align_take(Path(job["video"]), job["expected_frames"], cfg)
    out = Path(job["out"])
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, key=np.array(job["key"]), take_id=np.array(job["take_id"]), **arrays)
    return {"take_id": job["take_id"]} | summarise(arrays)
