"""The split stage: takes eligible for training, protocols from params, leakage checks, outputs.

Labels are the QA stage's aggregated labels when `split.labels: qa`, else the prompted expression
(until QA labels exist); the report says which. Takes flagged by alignment are left out and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline import paths, vocab
from pipeline.modes import manifest_modes
from pipeline.params import Params
from pipeline.split import protocols
from pipeline.split.leakage import SPLITS, SplitLeakageError, check_protocol
from pipeline.utils import io

log = logging.getLogger(__name__)


def dhash(rgb: np.ndarray, size: int = 16) -> np.ndarray:
    """Difference hash (size x size bits) of a frame: robust to noise and small shifts."""
    g = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (size + 1, size), interpolation=cv2.INTER_AREA).astype(np.int16)
    return (g[:, 1:] > g[:, :-1]).ravel()


def take_hash(npz: Path) -> np.ndarray | None:
    """Hash of the middle found frame of an aligned take (None if no frame was found)."""
    with np.load(npz) as z:
        valid = np.flatnonzero(z["valid"])
        if not len(valid):
            return None
        return dhash(z["frames"][valid[len(valid) // 2]])


def eligible_takes(manifest: pd.DataFrame, align_takes: pd.DataFrame, labels: pd.DataFrame | None,
                   min_class_takes: int = 1, label_source: str = "prompted") -> tuple[pd.DataFrame, dict]:
    """(take_id, subject_id, mode, label, official_fold) of accepted, well-aligned takes; and what was left out, why.

    The mode is the one ingest computed (manifest `mode`, from `ingest.mode_fields`); labels are QA's
    when given, else the dataset's own (`dataset`, kept apart from the prompted expression) or the prompt.
    """
    acc = manifest[manifest["status"] == vocab.ACCEPTED].copy()
    acc["mode"] = manifest_modes(acc)  # ingest's mode; a manifest without it must be rebuilt
    if "official_fold" not in acc:
        acc["official_fold"] = None
    flagged = set(align_takes.loc[align_takes["status"] != vocab.ALIGN_OK, "take_id"])
    excluded = {"not_accepted_by_ingest": int((manifest["status"] != vocab.ACCEPTED).sum()),
                "flagged_by_align": int(acc["take_id"].isin(flagged).sum())}
    acc = acc[~acc["take_id"].isin(flagged)]
    if labels is not None:
        lab = labels[labels["status"] == vocab.ACCEPTED].set_index("take_id")["label"]
        excluded["no_accepted_label"] = int((~acc["take_id"].isin(lab.index)).sum())
        acc = acc[acc["take_id"].isin(lab.index)]
        acc["label"] = lab.loc[acc["take_id"]].to_numpy()
    elif label_source == "dataset":
        if "dataset_label" not in acc:
            raise protocols.SplitError("split.labels is 'dataset' but the manifest has no dataset_label column (ingest an imported dataset)")
        missing = acc["dataset_label"].isna() | (acc["dataset_label"] == "")
        excluded["no_dataset_label"] = int(missing.sum())
        acc = acc[~missing]
        acc["label"] = acc["dataset_label"]
    else:
        acc["label"] = acc["prompted_expression"]
    counts = acc["label"].value_counts()
    rare = sorted(counts[counts < min_class_takes].index)
    excluded["rare_class"] = int(acc["label"].isin(rare).sum())
    excluded["rare_classes"] = rare  # too few takes to appear in every split; left out, not hidden
    acc = acc[~acc["label"].isin(rare)]
    cols = ["take_id", "subject_id", "mode", "label", "official_fold"]
    return acc[cols].astype({"official_fold": "string"}).sort_values("take_id").reset_index(drop=True), excluded


def build(params: Params, takes: pd.DataFrame) -> dict[str, dict]:
    s = params.split
    out = {"subject_kfold": protocols.subject_kfold(takes, s.subject_kfold_k, s.val_subjects, s.seed)}
    if s.seen_modes:  # empty: no unseen-mode protocol (in-the-wild data has no modes to hold out)
        out["unseen_mode"] = protocols.unseen_mode(takes, s.seen_modes, s.unseen_mode_folds, s.val_subjects, s.seed)
    if s.official_folds:
        out["official"] = protocols.official(takes, s.official_val_fraction, s.seed)
    if s.leave_one_mode_out:
        out["leave_one_mode_out"] = protocols.leave_one_mode_out(takes, s.lomo_test_subjects, s.val_subjects, s.seed)
    return out


def counts(split: dict, takes: pd.DataFrame) -> list[dict]:
    """Takes per fold x split x class x mode, for the report."""
    t = takes.set_index("take_id")
    rows = []
    for fold in split["folds"]:
        for name in SPLITS:
            if name not in fold:
                continue
            sub = t.loc[fold[name]]
            rows.append({"fold": fold["fold"], "split": name, "takes": len(sub), "subjects": int(sub["subject_id"].nunique()),
                         "by_class": dict(sorted(Counter(sub["label"]).items())), "by_mode": dict(sorted(Counter(sub["mode"]).items()))})
    return rows


def run(params: Params, manifest_path: Path = paths.MANIFEST, align_takes_path: Path = paths.ALIGN_TAKES,
        aligned: Path = paths.ALIGNED, out_dir: Path = paths.SPLITS, report_path: Path = paths.SPLITS_REPORT) -> dict:
    labels = pd.read_parquet(paths.LABELS) if params.split.labels == "qa" else None
    takes, excluded = eligible_takes(pd.read_parquet(manifest_path), pd.read_parquet(align_takes_path), labels,
                                     params.split.min_class_takes, params.split.labels)
    if takes.empty:
        left_out = ", ".join(f"{k} {v}" for k, v in excluded.items() if isinstance(v, int) and v)
        raise protocols.SplitError(f"{manifest_path}: no take is eligible for splitting (left out: {left_out or 'none'}); "
                                   f"split.min_class_takes is {params.split.min_class_takes}, split.labels is {params.split.labels!r}")
    classes = sorted(takes["label"].unique())
    hashes = {t: h for t in takes["take_id"] if (h := take_hash(aligned / f"{t}.npz")) is not None}
    splits = build(params, takes)
    problems = [p for split in splits.values() for p in check_protocol(split, takes, classes, hashes, params.split.near_duplicate_max_bits)]
    if problems:
        raise SplitLeakageError(f"{len(problems)} leak(s) in the splits:\n  " + "\n  ".join(problems))
    label_source = {"qa": "QA-aggregated labels", "dataset": "the imported dataset's own labels (split.labels: dataset)",
                    "prompted": "prompted expressions (split.labels: prompted)"}[params.split.labels]
    io.write_parquet(out_dir / "takes.parquet", takes)
    for name, split in splits.items():
        io.write_json(out_dir / f"{name}.json", split | {"labels": label_source, "classes": classes})
    report = {"labels": label_source, "classes": classes, "eligible_takes": len(takes), "excluded": excluded,
              "subjects": int(takes["subject_id"].nunique()), "modes": sorted(takes["mode"].unique()),
              "protocols": {name: counts(split, takes) for name, split in splits.items()}}
    io.write_json(report_path, report)
    log.info("splits: %d takes of %d subjects; %s written; labels: %s", len(takes), report["subjects"], ", ".join(splits), label_source)
    return report
