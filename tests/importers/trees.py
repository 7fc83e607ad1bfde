"""Small trees in the public datasets' layouts, written from simulated faces (nothing is downloaded).

Each writer takes simulated takes (decoded from a capture the simulator rendered) and lays their
frames out exactly as the dataset ships them, adding the defects the importers must count.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.utils.frames import iter_frames

FOLDER = {"happiness": "Happiness", "surprise": "Surprise", "anger": "Anger", "sadness": "Sadness"}
DFEW_CODE = {"happiness": "1", "sadness": "2", "surprise": "5", "anger": "4"}
FERV_CODE = {"anger": "0", "happiness": "3", "sadness": "5", "surprise": "6"}


@dataclass(frozen=True)
class SimTake:
    subject: int
    expression: str
    light: str  # the simulator's illumination
    yaw: float
    frames: tuple[np.ndarray, ...]


def load_sim_takes(raw: Path) -> list[SimTake]:
    """Every take of a simulated capture, decoded (BGR), with its subject index, expression and light."""
    with open(raw / "capture_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    subjects = sorted({r["subject_id"] for r in rows})
    return [
        SimTake(
            subjects.index(r["subject_id"]),
            r["prompted_expression"],
            r["illumination"],
            float(r["yaw"]),
            tuple(iter_frames(raw / r["file"])),
        )
        for r in sorted(rows, key=lambda r: r["take_id"])
    ]


def _write_frames(folder: Path, frames: tuple[np.ndarray, ...], name: str, ext: str = ".jpeg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, fr in enumerate(frames):
        ok, buf = cv2.imencode(ext, fr)
        if not ok:
            raise RuntimeError("encode failed")
        (folder / f"{name.format(i=i)}{ext}").write_bytes(buf.tobytes())


def _dark(frames: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple((f.astype(np.float32) * 0.45).astype(np.uint8) for f in frames)


def oulu_casia(root: Path, takes: list[SimTake], imagings: tuple[str, ...] = ("VL",), defects: bool = True) -> int:
    """OriginalImg/{VL,NI}/{Strong,Weak,Dark}/P00k/<Expression>/000.jpeg: frontal light -> Strong,
    side light -> Weak, frontal light darkened -> Dark. Returns the number of good takes written."""
    n = 0
    for t in takes:
        if t.yaw != 0:
            continue
        lights = {"frontal": [("Strong", t.frames), ("Dark", _dark(t.frames))], "left": [("Weak", t.frames)]}.get(
            t.light, []
        )
        for imaging in imagings:
            for light, frames in lights:
                frames = (
                    tuple(cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for f in frames)
                    if imaging == "NI"
                    else frames
                )
                _write_frames(
                    root / "OriginalImg" / imaging / light / f"P{t.subject + 1:03d}" / FOLDER[t.expression],
                    frames,
                    "{i:03d}",
                )
                n += 1
    if defects:
        (root / "OriginalImg" / "VL" / "Strong" / "P001" / "Fear").mkdir(parents=True)  # empty folder
        strong = root / "OriginalImg" / "VL" / "Strong" / "P001"
        _write_frames(strong / "Bored", takes[0].frames[:2], "{i:03d}")  # unknown label
        (strong / "notes.txt").write_text("not a frame\n")  # outside the template
    return n


def ckplus(root: Path, takes: list[SimTake]) -> dict[str, str]:
    """cohn-kanade-images/S00k/00n/S00k_00n_0000000i.png + Emotion/.../*_emotion.txt; the last sequence has
    no label file, one has code 2 (contempt, not in the rig). Returns {take id: expected label}."""
    codes = {"anger": 1, "happiness": 5, "surprise": 7, "sadness": 6}
    expected = {}
    seqs = [t for t in takes if t.yaw == 0 and t.light == "frontal"]
    for i, t in enumerate(seqs):
        s, q = f"S{t.subject + 5:03d}", f"{i + 1:03d}"
        _write_frames(root / "cohn-kanade-images" / s / q, t.frames, f"{s}_{q}_{{i:08d}}", ".png")
        if i == len(seqs) - 1:
            continue  # missing label
        code = 2 if i == len(seqs) - 2 else codes[t.expression]
        lab = root / "Emotion" / s / q / f"{s}_{q}_{len(t.frames):08d}_emotion.txt"
        lab.parent.mkdir(parents=True, exist_ok=True)
        lab.write_text(f"   {code:.7e}\n")
        if code != 2:
            expected[f"ckplus-{s}-{q}"] = t.expression
    (root / "cohn-kanade-images" / "S099" / "001").mkdir(parents=True)  # empty sequence folder
    return expected


def dfew(root: Path, takes: list[SimTake]) -> dict[str, tuple[str, str]]:
    """data/0000n/0000n_0000i.jpg and EmoLabel_DataSplit/{train,test}(single-labeled)/set_1..5.csv;
    clip n's test set is 1 + n % 5. One clip has no label, one label names a missing clip, one code is 9."""
    clips = {}
    for n, t in enumerate(takes, start=1):
        _write_frames(root / "data" / f"{n:05d}", t.frames, f"{n:05d}_{{i:05d}}", ".jpg")
        clips[n] = t
    labelled = {n: (DFEW_CODE[t.expression], str(1 + n % 5)) for n, t in clips.items() if n != len(clips)}
    labelled[len(clips) + 1] = ("1", "1")  # a label for a clip that is not there
    labelled[1] = ("9", labelled[1][1])  # an unknown code
    for k in range(1, 6):
        for part in ("train", "test"):
            f = root / "EmoLabel_DataSplit" / f"{part}(single-labeled)" / f"set_{k}.csv"
            f.parent.mkdir(parents=True, exist_ok=True)
            rows = [(n, code) for n, (code, fold) in sorted(labelled.items()) if (fold == str(k)) == (part == "test")]
            f.write_text("video_name,label\n" + "".join(f"{n},{code}\n" for n, code in rows))
    return {
        f"dfew-{n:05d}": (clips[n].expression, fold) for n, (code, fold) in labelled.items() if n in clips and n != 1
    }


def mafw(root: Path, takes: list[SimTake]) -> dict[str, tuple[str, str]]:
    """data/frames/0000n/ and split/single/no_caption/set_k/{train,test}.txt (`0000n.mp4 label`)."""
    out = {}
    for n, t in enumerate(takes, start=1):
        _write_frames(root / "data" / "frames" / f"{n:05d}", t.frames, "{i:05d}", ".png")
        out[f"mafw-{n:05d}"] = (t.expression, str(1 + n % 5))
    for k in range(1, 6):
        d = root / "split" / "single" / "no_caption" / f"set_{k}"
        d.mkdir(parents=True, exist_ok=True)
        for part in ("train", "test"):
            lines = [
                f"{n[5:]}.mp4 {e}\n" for n, (e, fold) in sorted(out.items()) if (fold == str(k)) == (part == "test")
            ]
            (d / f"{part}.txt").write_text("".join(lines))
    return out


def ferv39k(root: Path, takes: list[SimTake]) -> dict[str, tuple[str, str]]:
    """2_ClipsforFaceCrop/<Scene>/<Emotion>/<id>/ and 4_setups/All_scenes/{train,test}_All.csv (`path label`)."""
    out, lists = {}, {"train": [], "test": []}
    for n, t in enumerate(takes, start=1):
        scene = "Action" if t.light == "frontal" else "Crime"
        rel = f"{scene}/{FOLDER[t.expression]}/{n:04d}"
        _write_frames(root / "2_ClipsforFaceCrop" / rel, t.frames, "{i:04d}", ".jpg")
        part = "test" if n % 4 == 0 else "train"
        lists[part].append(f"{rel} {FERV_CODE[t.expression]}\n")
        out[f"ferv39k-{scene}-{FOLDER[t.expression]}-{n:04d}"] = (t.expression, part)
    d = root / "4_setups" / "All_scenes"
    d.mkdir(parents=True)
    for part, lines in lists.items():
        (d / f"{part}_All.csv").write_text("".join(lines))
    return out


def afew(root: Path, takes: list[SimTake], fps: float = 10.0) -> dict[str, tuple[str, str]]:
    """{Train,Val}/<Emotion>/<clip>.avi (MJPG)."""
    out = {}
    for n, t in enumerate(takes, start=1):
        part = "Val" if n % 3 == 0 else "Train"
        path = root / part / FOLDER[t.expression].replace("Happiness", "Happy") / f"{n:09d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = t.frames[0].shape[:2]
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
        for f in t.frames:
            vw.write(f)
        vw.release()
        out[f"afew-{part}-{path.parent.name}-{n:09d}"] = (t.expression, "test" if part == "Val" else "train")
    return out
