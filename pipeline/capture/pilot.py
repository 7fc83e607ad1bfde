"""A lab's pilot as the lab would hand it over: 3 subjects x 6 expressions x 2 head poses, 36 H.264 clips at
30 fps in the lab's own naming (`P01/happy/P01_happy_left.mp4`), with the usual warts: one truncated clip,
one 30-second clip (a recording left running), two text files and a copy whose name has a blank.

Why here: the walk-through of docs/recordings.md is both an integration test
(tests/importers/test_recordings_pilot.py) and a benchmark (scripts/bench_recordings.py); both build the
same folder from this one builder. The faces come from the capture simulator (nothing is downloaded); the
clips are re-encoded with libx264 as a camera would write them. Not part of any stage.
"""

from __future__ import annotations

import csv
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipeline.capture.simulate import simulate
from pipeline.params import CaptureParams, Pose
from pipeline.utils.frames import iter_frames

# What the lab writes for each expression: three synonyms, three names that are expression names already.
WORDS = {
    "happiness": "happy",
    "sadness": "sad",
    "anger": "angry",
    "surprise": "surprise",
    "disgust": "disgust",
    "fear": "fear",
}
POSES = {-30.0: "left", 30.0: "right"}
FPS = 30
TRUNCATED = "P02/happy/P02_happy_right.mp4"
LONG = "P03/fear/P03_fear_left.mp4"
COPY = "P01/happy/P01_happy_left (1).mp4"
TEXTS = ("notes.txt", "P01/README.txt")
CLIPS = 36
# The consent sheet as the lab fills it in after init: P03 consented to research only (never released).
CONSENT = (
    "subject_id,consent_research,consent_public_release,withdrawn,consent_basis\n"
    "P01,true,true,false,signed form 2026-11-02\n"
    "P02,true,true,false,signed form 2026-11-02\n"
    "P03,true,false,false,signed form 2026-11-03 (research only)\n"
)


def encode(frames: list[np.ndarray], dest: Path, fps: int = FPS) -> None:
    """H.264 (yuv420p) in MP4 at `fps`, as a camera or a phone writes it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(dest), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        h, w = frames[0].shape[:2]
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18"}
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def pilot_capture_params() -> CaptureParams:
    """The simulator's settings for the pilot's faces: 3 subjects, 6 expressions, two side cameras, 16 frames."""
    return CaptureParams(
        seed=7,
        n_subjects=3,
        n_withdrawn=0,
        n_no_public_release=0,
        expressions=sorted(WORDS),
        poses=[Pose(camera="cam_l30", yaw=-30, pitch=0), Pose(camera="cam_r30", yaw=30, pitch=0)],
        illuminations=["frontal"],
        frame_size=96,
        fps=float(FPS),
        n_frames=16,
        return_to_neutral=False,
        sessions=1,
        workers=1,
    )


def reduced_training(params: dict[str, Any]) -> dict[str, Any]:
    """params.yaml (as a dict) with fewer epochs, seeds and variants and one worker per stage: minutes, not more."""
    for section in ("ingest", "align", "media"):
        params[section]["workers"] = 1
    backend = params["experiment"]["primary"]["backend"]  # the pre-registered pair stays trainable
    params["features"].update({"epochs": 2, "frames_per_take": 4, "backends": [backend], "seeds": [0], "workers": 1})
    params["train"].update({"variants": ["lstm", "mv_lstm"], "seeds": [0], "epochs": 3, "patience": 2, "workers": 1})
    return params


def make_pilot(dest: Path, work: Path) -> Path:
    """Write the pilot folder into `dest` (returned); `work` holds the simulator's render."""
    sim = work / "sim"
    simulate(pilot_capture_params(), sim)
    with open(sim / "capture_log.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["take_id"])
    subjects = sorted({r["subject_id"] for r in rows})
    for r in rows:
        subject = f"P{subjects.index(r['subject_id']) + 1:02d}"
        word = WORDS[r["prompted_expression"]]
        rel = f"{subject}/{word}/{subject}_{word}_{POSES[float(r['yaw'])]}.mp4"
        frames = list(iter_frames(sim / r["file"]))
        if rel == LONG:  # 30 seconds: the take played back and forth until the camera was stopped
            cycle = frames + frames[::-1]
            frames = (cycle * (30 * FPS // len(cycle) + 1))[: 30 * FPS]
        encode(frames, dest / rel)
    clip = dest / TRUNCATED
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) * 6 // 10])  # the card was pulled out while writing
    shutil.copyfile(dest / "P01/happy/P01_happy_left.mp4", dest / COPY)
    (dest / TEXTS[0]).write_text("pilot, 3 subjects, recorded on the lab's two side cameras\n")
    (dest / TEXTS[1]).write_text("P01: wore glasses in the first session\n")
    clips = len(list(dest.rglob("*.mp4")))
    if clips != CLIPS + 1:
        raise RuntimeError(f"pilot folder {dest}: {clips} .mp4 files written, expected {CLIPS + 1}")
    return dest
