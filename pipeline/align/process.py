"""Align one take: stream its frames, track the face, crop onto the template, write one .npz.

The same function runs in a local process pool and on Dask workers, so both executors give
byte-identical outputs. Frames are streamed: memory holds two full-resolution frames (the [1, 2, 1]
smoothing needs one frame of look-ahead) and the small per-frame arrays; the aligned crops go to a
temporary raw file outside the output folder and are streamed into the .npz, so a 100,000-frame
take needs no more memory for frames than a 16-frame one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.align.detectors import make_detector
from pipeline.align.quality import blur_score, estimate_yaw, longest_gap
from pipeline.align.template import align_crop
from pipeline.align.tracking import (
    SOURCE_DETECT,
    SOURCE_NONE,
    FaceTracker,
    TrackerConfig,
    eye_distance,
    mean_distance,
    smooth_one,
)
from pipeline.errors import environment_fault, is_environment_fault
from pipeline.utils import io
from pipeline.utils.frames import FrameReadError, iter_frames

log = logging.getLogger(__name__)
_detectors: dict[str, object] = {}


@dataclass(frozen=True)
class AlignConfig:
    """Everything that changes an aligned output; its hash is part of every take's cache key.

    `provenance` is the hash of the code, weights and libraries (pipeline/align/provenance.py),
    computed at run time: no hand-bumped version number.
    """

    detector: str
    detector_options: tuple[tuple[str, object], ...]
    crop_size: int
    tracker: TrackerConfig
    provenance: str = ""

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def take_key(content_sha256: str, cfg: AlignConfig) -> str:
    """A take is processed once per (content hash, parameters, code, weights)."""
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


class _Pending:
    """One decoded frame waiting for its successor's points (the smoothing looks one frame ahead)."""

    __slots__ = ("rgb", "raw", "valid")

    def __init__(self, rgb: np.ndarray, raw: np.ndarray, valid: bool) -> None:
        self.rgb, self.raw, self.valid = rgb, raw, valid


def align_take(take: Path, expected_frames: int, cfg: AlignConfig, spill: Path) -> dict[str, np.ndarray | io.RawArray]:
    """Track and align every frame of one take (video file or frame folder), streaming.

    The aligned crops are appended to `spill` (raw bytes) and returned as an `io.RawArray`; all
    other arrays are small (one row per frame).
    """
    tracker = FaceTracker(_detector(cfg), cfg.tracker)
    S = cfg.crop_size
    rows: dict[str, list] = {
        k: []
        for k in (
            "raw",
            "pts",
            "score",
            "source",
            "stretched",
            "n_faces",
            "mats",
            "blur",
            "bright",
            "iod",
            "yaw",
            "jitter",
        )
    }
    frame_shape: tuple[int, ...] | None = None
    blank = np.zeros((S, S, 3), np.uint8)
    nan_pts, nan_mat = np.full((5, 2), np.nan), np.full((2, 3), np.nan)

    def finish(prev: _Pending | None, cur: _Pending, nxt: _Pending | None, out) -> None:
        """Smooth, crop and measure `cur` now that its neighbours are known; append its crop."""
        if not cur.valid:
            rows["pts"].append(nan_pts)
            rows["mats"].append(nan_mat)
            for k in ("blur", "bright", "iod", "yaw", "jitter"):
                rows[k].append(np.nan)
            out.write(blank.tobytes())
            return
        pts = smooth_one(
            prev.raw if prev is not None and prev.valid else None,
            cur.raw,
            nxt.raw if nxt is not None and nxt.valid else None,
        )
        crop, M = align_crop(cur.rgb, pts, S)
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        iod = eye_distance(pts)
        rows["pts"].append(pts)
        rows["mats"].append(M)
        rows["blur"].append(blur_score(gray))
        rows["bright"].append(int(gray.astype(np.int64).sum()) / gray.size)
        rows["iod"].append(iod)
        rows["yaw"].append(estimate_yaw(pts))
        rows["jitter"].append(mean_distance(cur.raw, pts) / max(iod, 1e-6))
        out.write(np.ascontiguousarray(crop).tobytes())

    window: list[_Pending] = []  # at most [previous, current]
    with open(spill, "wb") as out:
        try:
            for bgr in iter_frames(take):
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frame_shape = frame_shape or rgb.shape
                r = tracker.step(rgb)
                rows["raw"].append(r.points if r.points is not None else nan_pts)
                for k, v in (
                    ("score", r.score),
                    ("source", r.source),
                    ("stretched", r.stretched),
                    ("n_faces", r.n_faces),
                ):
                    rows[k].append(v)
                new = _Pending(rgb, rows["raw"][-1], r.points is not None)
                if window:
                    finish(window[-2] if len(window) == 2 else None, window[-1], new, out)
                window = [*window[-1:], new]
        except FrameReadError as e:  # decoding stops here; the take is flagged decode_stopped
            log.warning("%s", e)
        if window:
            finish(window[-2] if len(window) == 2 else None, window[-1], None, out)
    T = len(rows["raw"])
    valid = np.array([s != SOURCE_NONE for s in rows["source"]], dtype=bool)
    return {
        "frames": io.RawArray(spill, np.dtype(np.uint8), (T, S, S, 3)),
        "points": np.array(rows["pts"], np.float32).reshape(T, 5, 2),
        "raw_points": np.array(rows["raw"], np.float32).reshape(T, 5, 2),
        "valid": valid,
        "source": np.array(rows["source"], np.uint8),
        "score": np.array(rows["score"], np.float32),
        "stretched": np.array(rows["stretched"], bool),
        "n_faces": np.array(rows["n_faces"], np.int16),
        "matrices": np.array(rows["mats"], np.float32).reshape(T, 2, 3),
        **{
            name: np.array(rows[k], np.float32)
            for name, k in (
                ("blur", "blur"),
                ("brightness", "bright"),
                ("iod_px", "iod"),
                ("yaw_est", "yaw"),
                ("jitter", "jitter"),
            )
        },
        "expected_frames": np.array(expected_frames),
        "frame_shape": np.array(frame_shape or (0, 0, 0)),
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


NpzWriter = Callable[..., str]


def process_take(job: dict, write: NpzWriter = io.write_npz) -> dict:
    """Worker entry point: align, write `<out>` (deterministic, self-verifying) with its cache key.

    Temp files go to `job["tmp_dir"]` (outside the output folder, same filesystem). A take that
    fails because of its own content is logged in one line and returned with `error`; the stage
    goes on. A fault of the machine (disk full, memory) is raised as `EnvironmentFault`: it is no
    take's fault, and the stage must stop. `write` is `io.write_npz` (a parameter so a test can
    make the disk fail).
    """
    cfg: AlignConfig = job["cfg"]
    tmp_dir = Path(job["tmp_dir"])
    try:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, spill_name = tempfile.mkstemp(prefix=f".{job['take_id']}.", suffix=".frames.tmp", dir=tmp_dir)
        os.close(fd)
    except OSError as e:
        raise environment_fault(e, f"align {job['take_id']}: cannot create a temp file in {tmp_dir}") from e
    spill = Path(spill_name)
    try:
        arrays = align_take(Path(job["video"]), job["expected_frames"], cfg, spill)
        members = {"key": np.array(job["key"]), "take_id": np.array(job["take_id"]), **arrays}
        digest = write(Path(job["out"]), members, tmp_dir=tmp_dir)
        small = {k: v for k, v in arrays.items() if not isinstance(v, io.RawArray)}
        return {"take_id": job["take_id"], "sha256": digest} | summarise(small)
    except Exception as e:
        Path(job["out"]).unlink(missing_ok=True)
        if is_environment_fault(e):
            raise environment_fault(e, f"align {job['take_id']}") from e
        # one bad take never stops the stage: it is reported and flagged
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        log.warning("align: %s failed: %s: %s", job["take_id"], type(e).__name__, first)
        return {"take_id": job["take_id"], "error": f"{type(e).__name__}: {first}"}
    finally:
        spill.unlink(missing_ok=True)
