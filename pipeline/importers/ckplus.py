"""CK+: `cohn-kanade-images/S005/001/S005_001_00000011.png`, neutral to peak.

Labels are `Emotion/S005/001/S005_001_<n>_emotion.txt` holding a code 0-7, for 327 of the 593
sequences: a sequence without one is a counted exclusion (`missing_label`), never guessed.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.importers.common import IMPORTERS, ImportResult, Take, check_label, frame_take, rel, safe_id
from pipeline.params import ImportParams

NAME = "ckplus"


def read_code(path: Path) -> str | None:
    """The emotion code in a CK+ label file (`   3.0000000e+00`) as text, None if it is not a whole number."""
    try:
        value = float(path.read_text(encoding="ascii", errors="replace").strip())
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else None


@IMPORTERS.register(NAME)
def scan(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    res = ImportResult(NAME)
    images, emotion = src / "cohn-kanade-images", src / "Emotion"
    if not images.is_dir():
        res.exclude("cohn-kanade-images", "missing_folder", f"{src}: no cohn-kanade-images/ folder")
        return res
    for subject in sorted(p for p in images.iterdir() if p.is_dir()):
        for seq in sorted(p for p in subject.iterdir() if p.is_dir()):
            r = rel(seq, src)
            if not frame_take(seq):
                res.exclude(r, "empty_folder", f"{r}: no PNG/JPEG frame in the sequence folder")
                continue
            labels = sorted((emotion / subject.name / seq.name).glob("*_emotion.txt"))
            if not labels:
                res.exclude(r, "missing_label", f"{r}: no Emotion/{subject.name}/{seq.name}/*_emotion.txt")
                continue
            code = read_code(labels[0])
            if code is None:
                res.exclude(r, "bad_label_file", f"{rel(labels[0], src)}: not a numeric emotion code")
                continue
            label = check_label(res, r, cfg.label_maps[NAME].get(code), code, expressions)
            if label is None:
                continue
            res.takes.append(
                Take(
                    take_id=safe_id(NAME, subject.name, seq.name),
                    subject_id=safe_id(NAME, subject.name),
                    source=seq,
                    label=label,
                    fps=cfg.fps[NAME],
                    yaw=0.0,
                    pitch=0.0,
                )
            )
    return res
