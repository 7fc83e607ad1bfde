"""MAFW: frame folders `data/frames/<clip>/`; labels and the 5 official folds in
`split/single/no_caption/set_1..5/{train,test}.txt` (`clip.mp4 label`, a name or a code).

In-the-wild clips: like DFEW, each clip is its own subject and the official folds are the protocol.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.importers.common import IMPORTERS, ImportResult, Take, check_label, frame_take, rel, safe_id
from pipeline.importers.dfew import IN_THE_WILD_NOTE
from pipeline.importers.folds import merge_sets
from pipeline.importers.labels import clip_key, read_space_list, set_number
from pipeline.params import ImportParams

NAME = "mafw"
SPLIT_DIR = Path("split/single/no_caption")


@IMPORTERS.register(NAME)
def scan(src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult:
    res = ImportResult(NAME, notes=[IN_THE_WILD_NOTE])
    sets: dict[str, dict[str, dict[str, str]]] = {}
    split_root = src / SPLIT_DIR
    for f in sorted(split_root.glob("set_*/*.txt")) if split_root.is_dir() else []:
        k = set_number(f.parent)
        if k is not None and f.stem in ("train", "test"):
            sets.setdefault(k, {})[f.stem] = {clip_key(c): v for c, v in read_space_list(f, src, res).items()}
    if not sets:
        res.exclude(str(SPLIT_DIR), "missing_label_files", f"{split_root}: no set_<k>/{{train,test}}.txt label files")
    labelled = merge_sets(sets, res, str(SPLIT_DIR))
    frames = src / "data" / "frames"
    folders = {clip_key(p.name): p for p in sorted(frames.iterdir()) if p.is_dir()} if frames.is_dir() else {}
    for key, folder in folders.items():
        r = rel(folder, src)
        if not frame_take(folder):
            res.exclude(r, "empty_folder", f"{r}: no PNG/JPEG frame in the clip folder")
            continue
        if key not in labelled:
            res.exclude(r, "missing_label", f"{r}: clip {key} is in no label file")
            continue
        raw, fold = labelled[key]
        label = check_label(
            res, r, cfg.label_maps[NAME].get(raw, cfg.label_maps[NAME].get(raw.lower())), raw, expressions
        )
        if label is None:
            continue
        tid = safe_id(NAME, folder.name)
        res.takes.append(
            Take(take_id=tid, subject_id=tid, source=folder, label=label, fps=cfg.fps[NAME], official_fold=fold)
        )
    for key in sorted(set(labelled) - set(folders)):
        res.exclude(
            f"data/frames/{key}",
            "missing_take",
            f"clip {key} is in the label files but data/frames/ has no folder for it",
        )
    return res
