"""Oulu-CASIA: `OriginalImg/{VL,NI}/{Strong,Weak,Dark}/P001/Anger/000.jpeg` (or the cropped `PreProcess`).

The label is the expression folder; the modes are in the path: imaging (VL visible light, NI near
infrared) and light (Strong, Weak, Dark). Subjects look straight at the camera: yaw and pitch 0.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline.importers import pattern
from pipeline.importers.common import IMPORTERS, ImportResult
from pipeline.params import ImportParams

NAME = "oulu-casia"
TEMPLATE = "{imaging}/{light}/{subject}/{expression}/{frame}.jpeg"
SETS = ("OriginalImg", "PreProcess")


@IMPORTERS.register(NAME)
def scan(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    """Takes of one image set (OriginalImg if present, else the tree given is the set itself)."""
    root = next((src / s for s in SETS if (src / s).is_dir()), src)
    res = pattern.scan(
        root, TEMPLATE, {"expression": cfg.label_maps["folder"]}, cfg.fps[NAME], expressions, layout=NAME, frontal=True
    )
    prefix = "" if root == src else f"{root.name}/"
    res.takes = [replace(t, illumination=t.fields["light"].lower()) for t in res.takes]
    res.excluded = [replace(e, path=prefix + e.path) for e in res.excluded]
    if root != src:
        res.notes.append(f"read the {root.name} set; the other set is not imported")
    return res
