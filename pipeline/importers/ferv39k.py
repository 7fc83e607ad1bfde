"""FERV39k: frame folders `2_ClipsforFaceCrop/<Scene>/<Emotion>/<id>/`; the official train/test
split with labels in `4_setups/All_scenes/{train,test}_All.csv` (`path label`, codes 0-6).

The scene is in the path and kept as a mode field (`scene`). In-the-wild: each clip its own subject.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.importers.common import IMPORTERS, ImportResult, Take, check_label, frame_take, rel, safe_id
from pipeline.importers.dfew import IN_THE_WILD_NOTE
from pipeline.importers.labels import read_space_list
from pipeline.params import ImportParams

NAME = "ferv39k"
CLIPS = "2_ClipsforFaceCrop"
SETUP = Path("4_setups/All_scenes")


def _norm(p: str) -> str:
    """A list's clip path relative to the clips folder, whatever prefix the list uses."""
    parts = [x for x in p.replace("\\", "/").split("/") if x]
    if CLIPS in parts:
        parts = parts[parts.index(CLIPS) + 1 :]
    return "/".join(parts[-3:])


@IMPORTERS.register(NAME)
def scan(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    res = ImportResult(NAME, notes=[IN_THE_WILD_NOTE.replace("the official folds", "the official train/test split")])
    labelled: dict[str, tuple[str, str]] = {}
    for part in ("train", "test"):
        f = src / SETUP / f"{part}_All.csv"
        if not f.is_file():
            res.exclude(str(SETUP / f.name), "missing_label_files", f"{f}: official {part} list not found")
            continue
        for p, code in read_space_list(f, src, res).items():
            key = _norm(p)
            if key in labelled and labelled[key] != (code, part):
                res.exclude(
                    f"{SETUP}/{f.name}:{key}",
                    "conflicting_labels",
                    f"{key} is listed twice with different labels or splits",
                )
                continue
            labelled[key] = (code, part)
    clips = src / CLIPS
    seen = set()
    for folder in sorted(clips.glob("*/*/*")) if clips.is_dir() else []:
        if not folder.is_dir():
            continue
        r, key = rel(folder, src), rel(folder, clips)
        seen.add(key)
        if not frame_take(folder):
            res.exclude(r, "empty_folder", f"{r}: no PNG/JPEG frame in the clip folder")
            continue
        if key not in labelled:
            res.exclude(r, "missing_label", f"{r}: clip {key} is in neither official list")
            continue
        code, part = labelled[key]
        label = check_label(res, r, cfg.label_maps[NAME].get(code), code, expressions)
        if label is None:
            continue
        scene = folder.parent.parent.name
        tid = safe_id(NAME, *key.split("/"))
        res.takes.append(
            Take(
                take_id=tid,
                subject_id=tid,
                source=folder,
                label=label,
                fps=cfg.fps[NAME],
                official_fold=part,
                fields={"scene": scene},
            )
        )
    for key in sorted(set(labelled) - seen):
        res.exclude(f"{CLIPS}/{key}", "missing_take", f"clip {key} is in an official list but has no folder")
    return res
