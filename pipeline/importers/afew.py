"""AFEW: videos `{Train,Val}/<Emotion>/<clip>.avi`; the label is the folder, the split the top folder.

The official protocol trains on Train and tests on Val (the Test labels were never published).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2

from pipeline.importers import pattern
from pipeline.importers.common import IMPORTERS, ImportResult
from pipeline.importers.dfew import IN_THE_WILD_NOTE
from pipeline.params import ImportParams

NAME = "afew"
TEMPLATE = "{split}/{expression}/{take}.avi"


def video_fps(path: Path, default: float) -> float:
    """The container's frame rate (ingest checks it again by decoding); the default if it has none."""
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return float(fps) if fps and fps > 0 else default


@IMPORTERS.register(NAME)
def scan(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    res = pattern.scan(src, TEMPLATE, {"expression": cfg.label_maps["folder"]}, cfg.fps[NAME], expressions, layout=NAME)
    res.notes.append(IN_THE_WILD_NOTE.replace("the official folds", "the official Train/Val split"))
    takes = []
    for t in res.takes:
        split = t.fields["split"].lower()
        official = "test" if split == "val" else split
        fields = {k: v for k, v in t.fields.items() if k != "split"}
        takes.append(
            replace(t, subject_id=t.take_id, fps=video_fps(t.source, t.fps), official_fold=official, fields=fields)
        )
    res.takes = takes
    return res
