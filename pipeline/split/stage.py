"""The split stage: takes eligible for training, protocols from params, leakage checks, outputs.

Labels are the QA stage's aggregated labels when `split.labels: qa`, else the prompted expression
(until QA labels exist); the report says which. Takes flagged by alignment are left out and counted.
The core (`eligible_takes`, `compute`) works on tables and hashes; `run` reads and writes through the layout.
"""

from __future__ import annotations

import logging
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.errors import PipelineError, environment_fault, is_environment_fault
from pipeline.layout import Layout
from pipeline.modes import manifest_modes
from pipeline.params import Params, SplitParams
from pipeline.split import protocols
from pipeline.split.leakage import SPLITS, SplitIncompleteError, SplitLeakageError, check_protocol, incomplete
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)


def dhash(rgb: np.ndarray, size: int = 16) -> np.ndarray:
    """Difference hash (size x size bits) of a frame: robust to noise and small shifts."""
    g = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (size + 1, size), interpolation=cv2.INTER_AREA).astype(
        np.int16
    )
    return (g[:, 1:] > g[:, :-1]).ravel()


def take_hash(npz: Path) -> np.ndarray | None:
    """Hash of the middle found frame of an aligned take (None if no frame was found).

    A missing or damaged take is a one-line error naming the file (and field); a fault of the machine stays one.
    """
    try:
        with np.load(npz) as z:
            valid = np.flatnonzero(z["valid"])
            if not len(valid):
                return None
            return dhash(z["frames"][valid[len(valid) // 2]])
    except KeyError as e:
        field = str(e.args[0]).split(" is not a file in the archive")[0] if e.args else "?"
        raise protocols.SplitError(f"{npz}: aligned take has no field {field!r} (rerun align)") from e
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"reading {npz}") from e
        reason = "no such file" if isinstance(e, FileNotFoundError) else (str(e).splitlines() or [type(e).__name__])[0]
        raise protocols.SplitError(f"{npz}: cannot read the aligned take ({reason}; rerun align)") from e


def eligible_takes(
    manifest: pd.DataFrame,
    align_takes: pd.DataFrame,
    labels: pd.DataFrame | None,
    min_class_takes: int = 1,
    label_source: str = "prompted",
) -> tuple[pd.DataFrame, dict]:
    """(take_id, subject_id, mode, label, official_fold) of accepted, well-aligned takes; and what was left out, why.

    The mode is the one ingest computed (manifest `mode`, from `ingest.mode_fields`); labels are QA's
    when given, else the dataset's own (`dataset`, kept apart from the prompted expression) or the prompt.
    """
    acc = manifest[manifest["status"] == vocab.ACCEPTED].copy()
    acc["mode"] = manifest_modes(acc)  # ingest's mode; a manifest without it must be rebuilt
    if "official_fold" not in acc:
        acc["official_fold"] = None
    flagged = set(align_takes.loc[align_takes["status"] != vocab.ALIGN_OK, "take_id"])
    excluded: dict[str, Any] = {
        "not_accepted_by_ingest": int((manifest["status"] != vocab.ACCEPTED).sum()),
        "flagged_by_align": int(acc["take_id"].isin(flagged).sum()),
    }
    acc = acc[~acc["take_id"].isin(flagged)]
    if labels is not None:
        lab = labels[labels["status"] == vocab.ACCEPTED].set_index("take_id")["label"]
        excluded["no_accepted_label"] = int((~acc["take_id"].isin(lab.index)).sum())
        acc = acc[acc["take_id"].isin(lab.index)]
        acc["label"] = lab.loc[acc["take_id"]].to_numpy()
    elif label_source == "dataset":
        if "dataset_label" not in acc:
            raise protocols.SplitError(
                "split.labels is 'dataset' but the manifest has no dataset_label column (ingest an imported dataset)"
            )
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


def build(s: SplitParams, takes: pd.DataFrame) -> dict[str, dict]:
    """Every protocol the split parameters ask for, by name."""
    out = {"subject_kfold": protocols.subject_kfold(takes, s.subject_kfold_k, s.val_subjects, s.seed)}
    if s.seen_modes:  # empty: no unseen-mode protocol (in-the-wild data has no modes to hold out)
        out["unseen_mode"] = protocols.unseen_mode(takes, s.seen_modes, s.unseen_mode_folds, s.val_subjects, s.seed)
    if s.official_folds:
        out["official"] = protocols.official(takes, s.official_val_fraction, s.seed)
    if s.leave_one_mode_out:
        out["leave_one_mode_out"] = protocols.leave_one_mode_out(takes, s.lomo_test_subjects, s.val_subjects, s.seed)
    for factor, wanted in (("pose", s.leave_one_pose_out), ("illumination", s.leave_one_illumination_out)):
        if wanted:
            out[f"leave_one_{factor}_out"] = protocols.leave_one_factor_out(
                takes, factor, s.mode_parts, s.factor_subject_groups, s.val_subjects, s.seed, s.factor_rotation
            )
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
            rows.append(
                {
                    "fold": fold["fold"],
                    "split": name,
                    "takes": len(sub),
                    "subjects": int(sub["subject_id"].nunique()),
                    "by_class": dict(sorted(Counter(sub["label"]).items())),
                    "by_mode": dict(sorted(Counter(sub["mode"]).items())),
                }
            )
    return rows


LABEL_SOURCES = {
    "qa": "QA-aggregated labels",
    "dataset": "the imported dataset's own labels (split.labels: dataset)",
    "prompted": "prompted expressions (split.labels: prompted)",
}


@dataclass(frozen=True)
class Splits:
    """What the stage writes: the eligible takes, one split per protocol (with labels and classes), the report."""

    takes: pd.DataFrame
    protocols: dict[str, dict[str, Any]]
    report: dict[str, Any]


def check_eligible(takes: pd.DataFrame, excluded: dict[str, Any], s: SplitParams, source: str) -> None:
    """A one-line error when no take is left to split, saying what left them out (`source`: the manifest)."""
    if takes.empty:
        left_out = ", ".join(f"{k} {v}" for k, v in excluded.items() if isinstance(v, int) and v)
        raise protocols.SplitError(
            f"{source}: no take is eligible for splitting (left out: {left_out or 'none'}); "
            f"split.min_class_takes is {s.min_class_takes}, split.labels is {s.labels!r}"
        )


def compute(takes: pd.DataFrame, excluded: dict[str, Any], hashes: dict[str, np.ndarray], s: SplitParams) -> Splits:
    """The protocols over the eligible takes, checked for every leak (one error listing them all), then for
    splits that lack a class (incomplete data, not a leak: `split.drop_incomplete` says what to leave out)."""
    takes, completeness = protocols.drop_incomplete(takes, s.drop_incomplete)
    if takes.empty:
        raise protocols.SplitError(
            f"split.drop_incomplete is {s.drop_incomplete!r} and every take was dropped: no subject has a take of "
            "every class (set it to none, or to the other of subjects/classes)"
        )
    classes = sorted(takes["label"].unique())
    splits = build(s, takes)
    problems = [
        p for split in splits.values() for p in check_protocol(split, takes, classes, hashes, s.near_duplicate_max_bits)
    ]
    if problems:
        raise SplitLeakageError(f"{len(problems)} leak(s) in the splits:\n  " + "\n  ".join(problems))
    gaps = [p for split in splits.values() for p in incomplete(split, takes, classes)]
    if gaps:
        who = completeness["incomplete_subjects"]
        lacking = "; ".join(f"{sid} lacks {', '.join(c)}" for sid, c in sorted(who.items())[:5]) or "none"
        raise SplitIncompleteError(
            f"{len(gaps)} split(s) lack a class (incomplete data, not a leak; subjects lacking a class: {lacking}); "
            f"set split.drop_incomplete: subjects or classes, or turn the protocol off:\n  " + "\n  ".join(gaps)
        )
    label_source = LABEL_SOURCES[s.labels]
    report = {
        "labels": label_source,
        "classes": classes,
        "eligible_takes": len(takes),
        "excluded": excluded,
        "completeness": completeness | {"setting": s.drop_incomplete},
        "subjects": int(takes["subject_id"].nunique()),
        "modes": sorted(takes["mode"].unique()),
        "protocols": {name: counts(split, takes) for name, split in splits.items()},
    }
    return Splits(
        takes, {name: split | {"labels": label_source, "classes": classes} for name, split in splits.items()}, report
    )


def _table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """A parquet input with the columns the stage reads; a missing file or column is a one-line error."""
    try:
        table = pd.read_parquet(path)
    except Exception as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"reading {path}") from e
        if isinstance(e, (OSError, ValueError)):
            reason = (
                "no such file" if isinstance(e, FileNotFoundError) else (str(e).splitlines() or [type(e).__name__])[0]
            )
            raise PipelineError(f"{path}: cannot read the table ({reason})") from e
        raise
    missing = [c for c in columns if c not in table]
    if missing:
        raise PipelineError(f"{path}: no column {missing[0]!r}")
    return table


def run(layout: Layout, params: Params) -> None:
    """Stage `split`: manifest, align verdicts, labels, aligned takes in; data/processed/splits and its report out."""
    s = params.split
    labels = _table(layout.labels, ("take_id", "status", "label")) if s.labels == "qa" else None
    manifest = _table(layout.manifest, ("take_id", "status", "subject_id"))
    align_takes = _table(layout.align_takes, ("take_id", "status"))
    takes, excluded = eligible_takes(manifest, align_takes, labels, s.min_class_takes, s.labels)
    check_eligible(takes, excluded, s, str(layout.manifest))
    hashes = {t: h for t in takes["take_id"] if (h := take_hash(layout.aligned / f"{t}.npz")) is not None}
    out = compute(takes, excluded, hashes, s)
    with io.atomic_dir(layout.splits) as tmp:
        io.write_parquet(tmp / "takes.parquet", out.takes)
        for name, split in out.protocols.items():
            io.write_json(tmp / f"{name}.json", split)
    io.write_json(layout.splits_report, with_provenance(out.report, params, "split"))
    log.info(
        "splits: %d takes of %d subjects; %s written; labels: %s",
        len(out.takes),
        out.report["subjects"],
        ", ".join(out.protocols),
        out.report["labels"],
    )


if __name__ == "__main__":
    raise SystemExit(main(run))
