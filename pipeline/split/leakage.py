"""Leakage checks: every way a protocol can lie about what the model has seen. Pure functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.errors import PipelineError

SPLITS = vocab.SPLITS
TRAINING = vocab.TRAINING_SPLITS


class SplitLeakageError(PipelineError, ValueError):
    """A split would leak test information into training; the message lists every leak found."""


class SplitIncompleteError(PipelineError, ValueError):
    """A split lacks a class (data too small or a subject missing takes): incomplete, not a leak."""


def _present(fold: dict) -> list[str]:
    return [s for s in SPLITS if s in fold]


def subject_leaks(fold: dict, subject_of: pd.Series) -> list[str]:
    """A subject whose takes fall in two different splits."""
    seen: dict[str, str] = {}
    out = []
    for split in _present(fold):
        for sid in sorted(set(subject_of.loc[fold[split]])):
            other = seen.get(sid)
            if other is not None and {other, split} != set(vocab.MODE_TEST_SPLITS):
                out.append(f"subject {sid} is in both '{other}' and '{split}'")
            seen.setdefault(sid, split)
    return out


def mode_leaks(fold: dict, mode_of: pd.Series) -> list[str]:
    """A mode of the unseen test set that also appears in training or validation."""
    if vocab.TEST_UNSEEN not in fold:
        return []
    unseen = set(mode_of.loc[fold[vocab.TEST_UNSEEN]])
    out = []
    for split in TRAINING:
        bad = sorted(unseen & set(mode_of.loc[fold[split]]))
        if bad:
            out.append(f"unseen mode(s) {', '.join(bad)} appear in '{split}'")
    return out


def class_gaps(fold: dict, label_of: pd.Series, classes: list[str]) -> list[str]:
    """A split with no take of some class (its accuracy would silently ignore that class)."""
    out = []
    for split in _present(fold):
        have = set(label_of.loc[fold[split]])
        missing = [c for c in classes if c not in have]
        if fold[split] and missing:
            out.append(f"split '{split}' has no take of class(es) {', '.join(missing)}")
        if not fold[split]:
            out.append(f"split '{split}' is empty")
    return out


def near_duplicates(fold: dict, hashes: dict[str, np.ndarray], max_bits: int, limit: int = 5) -> list[str]:
    """Near-identical frames (perceptual hash within max_bits) across training and test splits."""
    train_ids = [t for s in TRAINING for t in fold.get(s, []) if t in hashes]
    test_ids = [t for s in vocab.TEST_SPLITS for t in fold.get(s, []) if t in hashes]
    if not train_ids or not test_ids:
        return []
    A = np.stack([hashes[t] for t in train_ids])
    B = np.stack([hashes[t] for t in test_ids])
    dist = (A[:, None, :] != B[None, :, :]).sum(axis=2)
    pairs = np.argwhere(dist <= max_bits)
    out = [
        f"take {train_ids[i]} (training) and {test_ids[j]} (test) are near-duplicates "
        f"({dist[i, j]} of {A.shape[1]} hash bits differ)"
        for i, j in pairs[:limit]
    ]
    if len(pairs) > limit:
        out.append(f"... and {len(pairs) - limit} more near-duplicate pairs")
    return out


def check_protocol(
    split: dict, takes: pd.DataFrame, classes: list[str], hashes: dict[str, np.ndarray], max_bits: int
) -> list[str]:
    """Every leak in every fold, each prefixed with protocol and fold (a missing class is not a leak: `incomplete`)."""
    t = takes.set_index("take_id")
    problems = []
    for fold in split["folds"]:
        where = f"{split['protocol']} fold {fold['fold']}"
        for msg in (
            subject_leaks(fold, t["subject_id"]) + mode_leaks(fold, t["mode"]) + near_duplicates(fold, hashes, max_bits)
        ):
            problems.append(f"{where}: {msg}")
    return problems


def incomplete(split: dict, takes: pd.DataFrame, classes: list[str]) -> list[str]:
    """Every split of every fold that lacks a class or is empty, prefixed with protocol and fold."""
    label_of = takes.set_index("take_id")["label"]
    return [
        f"{split['protocol']} fold {fold['fold']}: {msg}"
        for fold in split["folds"]
        for msg in class_gaps(fold, label_of, classes)
    ]
