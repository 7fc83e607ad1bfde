"""The capture simulator: writes a raw capture folder exactly as the lab's rig would.

A *performance* is one subject making one expression under one illumination; every camera of the
rig records it at once, so the takes of a performance share timing and head motion and differ only
in pose. Output layout (the same a real rig produces, so ingest cannot tell the difference):

    <out>/takes/<take_id>.mp4     encoded video (mp4v), readable by OpenCV
    <out>/capture_log.csv         one row per take
    <out>/subjects.csv            pseudonymous subjects and their consent
    <out>/_truth/                 ground truth for measuring later stages, never read by them
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.capture.expressions import ACTION_UNITS, au_vector, intensity_curve
from pipeline.capture.face_model import Features, features_from_aus, five_points, sample_identity, with_gain
from pipeline.capture.render import ILLUMINATIONS, HeadRenderer, Surface
from pipeline.layout import CAPTURE_LOG_NAME, SUBJECTS_NAME, TAKES_SUBDIR, TRUTH_SUBDIR
from pipeline.parallel import Executor, pmap
from pipeline.params import CaptureParams, Pose
from pipeline.utils import io

log = logging.getLogger(__name__)

LOG_COLUMNS = list(vocab.CAPTURE_LOG_COLUMNS)
SUBJECT_COLUMNS = [
    "subject_id",
    "consent_research",
    "consent_public_release",
    "withdrawn",
    "consent_date",
    "withdrawn_date",
]
FOURCC = "mp4v"
SESSION_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Performance:
    """One recording event: all cameras of the rig film it at once."""

    index: int
    perf_id: str
    subject_index: int
    subject_id: str
    session: str
    illumination: str
    expression: str
    recorded_at: str


def subject_ids(seed: int, n: int) -> list[str]:
    """Pseudonymous, stable ids: a hash of the seed and index, never a name."""
    return [f"sub-{hashlib.sha256(f'mvfer-{seed}-{i}'.encode()).hexdigest()[:6]}" for i in range(n)]


def plan_subjects(p: CaptureParams) -> pd.DataFrame:
    """The consent table: some subjects decline public release, some withdraw after capture."""
    rng = np.random.default_rng([p.seed, 1])
    ids = subject_ids(p.seed, p.n_subjects)
    order = rng.permutation(p.n_subjects)
    withdrawn = set(order[: p.n_withdrawn].tolist())
    no_public = set(order[p.n_withdrawn : p.n_withdrawn + p.n_no_public_release].tolist())
    rows = []
    for i, sid in enumerate(ids):
        w = i in withdrawn
        rows.append(
            {
                "subject_id": sid,
                "consent_research": True,
                "consent_public_release": i not in no_public and not w,
                "withdrawn": w,
                "consent_date": (SESSION_START - timedelta(days=7)).date().isoformat(),
                "withdrawn_date": (SESSION_START + timedelta(days=60)).date().isoformat() if w else "",
            }
        )
    return pd.DataFrame(rows, columns=SUBJECT_COLUMNS)


def plan_performances(p: CaptureParams, ids: list[str]) -> list[Performance]:
    """Every subject x session x illumination x expression, in recording order."""
    perfs: list[Performance] = []
    for si, sid in enumerate(ids):
        for ses in range(p.sessions):
            t = SESSION_START + timedelta(days=si + 30 * ses)
            for illum in p.illuminations:
                for expr in p.expressions:
                    idx = len(perfs)
                    perfs.append(
                        Performance(
                            index=idx,
                            perf_id=f"pf{idx:05d}",
                            subject_index=si,
                            subject_id=sid,
                            session=f"ses-{ses + 1:02d}",
                            illumination=illum,
                            expression=expr,
                            recorded_at=t.isoformat(timespec="seconds"),
                        )
                    )
                    t += timedelta(seconds=45)
    return perfs


def _head_motion(rng: np.random.Generator, n: int, frame_size: int) -> np.ndarray:
    """Small smooth head movements (yaw, pitch degrees; dx, dy pixels) of a seated subject."""
    steps = rng.normal(0, 1, (n, 4)) * np.array([0.35, 0.3, 0.004 * frame_size, 0.004 * frame_size])
    walk = np.cumsum(steps, axis=0)
    walk -= walk.mean(axis=0)
    return walk + rng.normal(0, 1, 4) * np.array([1.0, 1.0, 0.02 * frame_size, 0.02 * frame_size])


@dataclass(frozen=True)
class RenderedPerformance:
    """One performance in memory: each camera's frames and truth, and the expression's time course."""

    onset: int
    apex: int
    peak: float
    curve: np.ndarray  # per-frame intensity
    aus: np.ndarray  # frames x action units
    takes: list[tuple[Pose, np.ndarray, np.ndarray, np.ndarray]]  # (camera, RGB frames, landmarks68, visible68)


def render_takes(p: CaptureParams, perf: Performance) -> RenderedPerformance:
    """Render every camera's take of one performance (no files): the pure part of `render_performance`."""
    ident = sample_identity(np.random.default_rng([p.seed, 2, perf.subject_index]), tone_index=perf.subject_index)
    rng = np.random.default_rng([p.seed, 3, perf.index])
    ident = with_gain(ident, float(rng.uniform(0.85, 1.1)))
    n = p.n_frames
    neutral = perf.expression == "neutral"
    onset = int(rng.integers(1, max(2, n // 6) + 1))
    apex = int(rng.integers(max(onset + 2, int(0.5 * n)), max(onset + 3, int(0.7 * n)) + 1))
    apex = min(apex, n - 1)
    peak = 0.0 if neutral else float(rng.uniform(0.75, 1.0))
    curve = intensity_curve(n, onset, apex, peak, p.return_to_neutral)
    motion = _head_motion(rng, n, p.frame_size)
    light = ILLUMINATIONS[perf.illumination]
    renderer = HeadRenderer(ident, p.frame_size)
    feats = [features_from_aus(au_vector(perf.expression, float(c)), ident.au_gain) for c in curve]
    aus = np.array([[au_vector(perf.expression, float(c))[a] for a in ACTION_UNITS] for c in curve], dtype=np.float32)

    # pose-independent, so shared by the cameras; and once per distinct expression: the frames
    # before the onset and from the apex on repeat one
    distinct: dict[Features, Surface] = {}
    for f in feats:
        if f not in distinct:
            distinct[f] = renderer.surface(f)
    surfaces = [distinct[f] for f in feats]
    takes = []
    for pose in p.poses:
        cam_rng = np.random.default_rng([p.seed, 4, perf.index, _stable_int(pose.camera)])
        backdrop = renderer.backdrop(pose.yaw, light, cam_rng)
        frames, lm2, vis = renderer.render_take(
            surfaces,
            [pose.yaw + m[0] for m in motion],
            [pose.pitch + m[1] for m in motion],
            [(m[2], m[3]) for m in motion],
            light,
            cam_rng,
            backdrop,
        )
        takes.append((pose, frames, lm2, vis))
    return RenderedPerformance(-1 if neutral else onset, -1 if neutral else apex, peak, curve, aus, takes)


def write_take(p: CaptureParams, frames: np.ndarray, video: Path) -> None:
    """Encode one take's RGB frames as the rig's video file."""
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*FOURCC), p.fps, (p.frame_size, p.frame_size))
    if not writer.isOpened():
        raise RuntimeError(f"{video}: OpenCV cannot open a {FOURCC} video writer")
    for frame in frames[..., ::-1]:  # RGB -> BGR
        writer.write(np.ascontiguousarray(frame))
    writer.release()


def render_performance(
    p: CaptureParams, perf: Performance, takes_dir: Path, truth_dir: Path
) -> tuple[list[dict], list[dict], float, int]:
    """Render and encode every camera's take of one performance; returns log rows, truth rows, CPU s, frames."""
    t_cpu = time.process_time()
    r = render_takes(p, perf)
    log_rows, truth_rows = [], []
    for pose, frames, lm2, vis in r.takes:
        take_id = f"{perf.perf_id}-{pose.camera}"
        write_take(p, frames, takes_dir / f"{take_id}.mp4")
        lms: np.ndarray = lm2.astype(np.float32)
        five = np.stack([five_points(lm) for lm in lms]).astype(np.float32)
        np.savez_compressed(
            truth_dir / f"{take_id}.npz",
            landmarks68=lms,
            visible68=vis,
            landmarks5=five,
            intensity=r.curve.astype(np.float32),
            aus=r.aus,
            action_units=np.array(ACTION_UNITS),
        )
        log_rows.append(
            {
                "take_id": take_id,
                "subject_id": perf.subject_id,
                "session": perf.session,
                "camera": pose.camera,
                "yaw": pose.yaw,
                "pitch": pose.pitch,
                "illumination": perf.illumination,
                "prompted_expression": perf.expression,
                "fps": p.fps,
                "recorded_at": perf.recorded_at,
                "file": f"{TAKES_SUBDIR}/{take_id}.mp4",
            }
        )
        truth_rows.append(
            {
                "take_id": take_id,
                "performance": perf.perf_id,
                "expression": perf.expression,
                "onset_frame": r.onset,
                "apex_frame": r.apex,
                "peak_intensity": r.peak,
                "skin_tone_index": perf.subject_index % 8,
            }
        )
    return log_rows, truth_rows, time.process_time() - t_cpu, p.n_frames * len(p.poses)


def _stable_int(text: str) -> int:
    """A seed component from a string that, unlike hash(), is the same in every process."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


RenderResult = tuple[list[dict], list[dict], float, int]
Render = Callable[[CaptureParams, Performance, Path, Path], RenderResult]


def _render_job(args: tuple[Render, CaptureParams, Performance, Path, Path]) -> RenderResult:
    """One performance in a worker: one OpenCV thread (one worker per core; its own threads would oversubscribe)."""
    render, p, perf, takes_dir, truth_dir = args
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return render(p, perf, takes_dir, truth_dir)
    finally:
        cv2.setNumThreads(threads)


def simulate(
    p: CaptureParams, out_dir: Path, executor: Executor | None = None, render: Render = render_performance
) -> dict:
    """Render the whole capture into `out_dir` atomically; returns the figures for the report.

    Every performance draws from its own seeded generators, so the bytes do not depend on the
    executor or the number of workers. Any failure (a disk that fills up is raised by `pmap` as
    `EnvironmentFault`) leaves `out_dir` as it was: the capture is published whole or not at all.
    `render` is a module-level function (workers are spawned); a test passes one that fails.
    """
    ex = executor or Executor("local", p.workers)
    ids = subject_ids(p.seed, p.n_subjects)
    subjects = plan_subjects(p)
    perfs = plan_performances(p, ids)
    n_takes = len(perfs) * len(p.poses)
    log.info(
        "simulating %d subjects, %d performances, %d takes of %d frames (%dpx) with %d workers",
        p.n_subjects,
        len(perfs),
        n_takes,
        p.n_frames,
        p.frame_size,
        ex.workers,
    )
    t0 = time.perf_counter()
    with io.atomic_dir(out_dir) as tmp:
        takes_dir, truth_dir = tmp / TAKES_SUBDIR, tmp / TRUTH_SUBDIR
        takes_dir.mkdir()
        truth_dir.mkdir()
        jobs = [(render, p, perf, takes_dir, truth_dir) for perf in perfs]
        results = list(pmap(_render_job, jobs, ex, desc="render", unit="perf", stage="capture"))
        log_rows = [r for res in results for r in res[0]]
        truth_rows = [r for res in results for r in res[1]]
        cpu = sum(res[2] for res in results)
        frames = sum(res[3] for res in results)
        capture_log = pd.DataFrame(log_rows, columns=LOG_COLUMNS).sort_values("take_id", kind="stable")
        io.write_csv(tmp / CAPTURE_LOG_NAME, capture_log)
        io.write_csv(tmp / SUBJECTS_NAME, subjects)
        # ingest records source=simulator from this marker; the release says "simulated" only then
        io.write_text(
            tmp / vocab.SIMULATOR_MARKER, "Rendered by the mvfer capture simulator: synthetic faces, no real person.\n"
        )
        io.write_csv(truth_dir / "takes.csv", pd.DataFrame(truth_rows).sort_values("take_id", kind="stable"))
    wall = time.perf_counter() - t0
    return {
        "n_subjects": p.n_subjects,
        "n_performances": len(perfs),
        "n_takes": n_takes,
        "n_frames": frames,
        "frame_size": p.frame_size,
        "workers": ex.workers,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "frames_per_s": round(frames / wall, 1),
        "frames_per_s_per_core": round(frames / cpu, 1) if cpu else None,
    }
