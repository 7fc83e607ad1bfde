"""DFEW: frame folders `data/00001/00001_00001.jpg`; labels and the 5 official folds in
`EmoLabel_DataSplit/{train,test}(single-labeled)/set_1..5.csv` (`video_name,label`, codes 1-7).

In-the-wild clips from films: no subject ids, pose or light. Each clip is its own subject (so the
subject-leakage check is vacuous) and the official folds are the protocol.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.importers.common import IMPORTERS, ImportResult, Take, check_label, frame_take, rel, safe_id
from pipeline.importers.folds import merge_sets
from pipeline.importers.labels import clip_key, read_video_label_csv, set_number
from pipeline.params import ImportParams

NAME = "dfew"
IN_THE_WILD_NOTE = (
    "clips in the wild: subject ids unknown (each clip is its own pseudonymous subject), yaw/pitch "
    "left empty, illumination 'unknown'; use the official folds (split protocol `official`)"
)


@IMPORTERS.register(NAME)
def scan(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    res = ImportResult(NAME, notes=[IN_THE_WILD_NOTE])
    label_root = src / "EmoLabel_DataSplit"
    sets: dict[str, dict[str, dict[str, str]]] = {}
    for f in sorted(label_root.rglob("set_*.csv")) if label_root.is_dir() else []:
        k = set_number(f)
        part = "test" if "test" in f.parent.name.lower() else "train"
        if k is not None:
            sets.setdefault(k, {})[part] = read_video_label_csv(f, src, res)
    if not sets:
        res.exclude("EmoLabel_DataSplit", "missing_label_files", f"{label_root}: no set_<k>.csv label files")
    labelled = merge_sets(sets, res, "EmoLabel_DataSplit")
    data = src / "data"
    folders = {clip_key(p.name): p for p in sorted(data.iterdir()) if p.is_dir()} if data.is_dir() else {}
    for key, folder in folders.items():
        r = rel(folder, src)
        if not frame_take(folder):
            res.exclude(r, "empty_folder", f"{r}: no PNG/JPEG frame in the clip folder")
            continue
        if key not in labelled:
            res.exclude(r, "missing_label", f"{r}: clip {key} is in no label file")
            continue
        code, fold = labelled[key]
        label = check_label(res, r, cfg.label_maps[NAME].get(code), code, expressions)
        if label is None:
            continue
        tid = safe_id(NAME, folder.name)
        res.takes.append(
            Take(take_id=tid, subject_id=tid, source=folder, label=label, fps=cfg.fps[NAME], official_fold=fold)
        )
    for key in sorted(set(labelled) - set(folders)):
        res.exclude(f"data/{key}", "missing_take", f"clip {key} is in the label files but data/ has no folder for it")
    return res
