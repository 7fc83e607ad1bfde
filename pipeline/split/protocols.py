"""Split protocols over a take table (take_id, subject_id, mode, label). Pure functions.

Every protocol is subject-independent: a subject's takes all fall in one of train, val and test
within a fold. Folds of subjects are balanced greedily by class counts (stratified by expression).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError
from pipeline.vocab import TEST, TEST_SEEN, TEST_UNSEEN, TRAIN, VAL


class SplitError(PipelineError, ValueError):
    """The eligible takes cannot fill what the split parameters ask for: a one-line error, not a traceback."""


def subject_groups(takes: pd.DataFrame, k: int, seed: int) -> list[list[str]]:
    """k groups of subjects with label counts as even as a greedy assignment makes them."""
    subjects = sorted(takes["subject_id"].unique())
    if k < 2 or k > len(subjects):
        raise SplitError(f"cannot make {k} subject folds from {len(subjects)} subjects")
    rng = np.random.default_rng(seed)
    order = [subjects[i] for i in rng.permutation(len(subjects))]
    counts = takes.groupby(["subject_id", "label"]).size().unstack(fill_value=0)
    groups: list[list[str]] = [[] for _ in range(k)]
    totals = np.zeros((k, counts.shape[1]))
    order.sort(key=lambda s: -counts.loc[s].sum())  # big subjects first (stable: ties keep the shuffle)
    for s in order:
        vec = counts.loc[s].to_numpy()
        size = np.array([len(g) for g in groups])
        score = ((totals + vec) ** 2).sum(axis=1) + 1e6 * size  # fewest subjects first, then balance
        best = int(np.argmin(score))
        groups[best].append(s)
        totals[best] += vec
    return [sorted(g) for g in groups]


def _val_subjects(candidates: list[str], n: int, seed: int, fold: int) -> list[str]:
    rng = np.random.default_rng([seed, fold])
    return sorted(rng.choice(candidates, size=min(n, len(candidates) - 1), replace=False).tolist())


def _ids(
    takes: pd.DataFrame, subjects: list[str], modes: set[str] | None = None, exclude: set[str] | None = None
) -> list[str]:
    sel = takes["subject_id"].isin(subjects)
    if modes is not None:
        sel &= takes["mode"].isin(modes)
    if exclude is not None:
        sel &= ~takes["mode"].isin(exclude)
    return sorted(takes.loc[sel, "take_id"])


def _rotate(groups: list[list[str]], val_subjects: int, seed: int):
    """(fold, train, val, test subjects) with each group the test set once."""
    for i, test in enumerate(groups):
        rest = sorted(s for g in groups for s in g if s not in test)
        val = _val_subjects(rest, val_subjects, seed, i)
        yield i, [s for s in rest if s not in val], val, test


def subject_kfold(takes: pd.DataFrame, k: int, val_subjects: int, seed: int) -> dict:
    """k subject-disjoint folds (Oulu-CASIA style): each group is the test set once."""
    folds = []
    for i, train, val, test in _rotate(subject_groups(takes, k, seed), val_subjects, seed):
        folds.append(
            {
                "fold": i,
                "subjects": {TRAIN: train, VAL: val, TEST: test},
                TRAIN: _ids(takes, train),
                VAL: _ids(takes, val),
                TEST: _ids(takes, test),
            }
        )
    return {"protocol": "subject_kfold", "folds": folds}


def unseen_mode(takes: pd.DataFrame, seen_modes: list[str], k: int, val_subjects: int, seed: int) -> dict:
    """Train and validate on the seen modes; test held-out subjects on seen and on unseen modes."""
    all_modes = set(takes["mode"])
    missing = [m for m in seen_modes if m not in all_modes]
    if missing:
        raise SplitError(
            f"seen mode(s) {', '.join(missing)} not in the data; modes present: {', '.join(sorted(all_modes))}"
        )
    seen = set(seen_modes)
    unseen = all_modes - seen
    if not unseen:
        raise SplitError("every mode is listed as seen: nothing is left to test as unseen")
    folds = []
    for i, train, val, test in _rotate(subject_groups(takes, k, seed), val_subjects, seed):
        folds.append(
            {
                "fold": i,
                "subjects": {TRAIN: train, VAL: val, TEST: test},
                "seen_modes": sorted(seen),
                "unseen_modes": sorted(unseen),
                TRAIN: _ids(takes, train, seen),
                VAL: _ids(takes, val, seen),
                TEST_SEEN: _ids(takes, test, seen),
                TEST_UNSEEN: _ids(takes, test, unseen),
            }
        )
    return {"protocol": "unseen_mode", "folds": folds}


def leave_one_mode_out(takes: pd.DataFrame, test_subjects: int, val_subjects: int, seed: int) -> dict:
    """One fold per mode: trained on every other mode, tested on held-out subjects in that mode."""
    subjects = sorted(takes["subject_id"].unique())
    rng = np.random.default_rng([seed, 99])
    test = sorted(rng.choice(subjects, size=test_subjects, replace=False).tolist())
    rest = [s for s in subjects if s not in test]
    val = _val_subjects(rest, val_subjects, seed, 99)
    train = [s for s in rest if s not in val]
    folds = []
    for i, mode in enumerate(sorted(takes["mode"].unique())):
        folds.append(
            {
                "fold": i,
                "held_out_mode": mode,
                "subjects": {TRAIN: train, VAL: val, TEST: test},
                TRAIN: _ids(takes, train, exclude={mode}),
                VAL: _ids(takes, val, exclude={mode}),
                TEST_SEEN: _ids(takes, test, exclude={mode}),
                TEST_UNSEEN: _ids(takes, test, {mode}),
            }
        )
    return {"protocol": "leave_one_mode_out", "folds": folds}


def official(takes: pd.DataFrame, val_fraction: float, seed: int) -> dict:
    """The dataset's own folds, reproduced exactly: fold k tests the takes its authors put in test set k.

    `official_fold` holds the test set of each take (DFEW, MAFW: 1-5; FERV39k, AFEW: `train`/`test`,
    one fold testing `test`). Everything not tested in a fold trains it, as the official lists say;
    `val_fraction` of those training takes (whole subjects) is held out for early stopping, so
    train + val is exactly the official training set.
    """
    if "official_fold" not in takes or not takes["official_fold"].notna().any():
        raise SplitError(
            "split.official_folds is true but no take has an official_fold (import a dataset that has folds)"
        )
    values = sorted(set(takes["official_fold"].dropna()) - {""})
    tests = ["test"] if set(values) <= {"train", "test"} else values
    folds = []
    for i, name in enumerate(sorted(tests, key=lambda v: (len(v), v))):
        test_sel = takes["official_fold"] == name
        rest = takes.loc[~test_sel]
        val = _official_val(rest, val_fraction, seed, i)
        train = sorted(set(rest["subject_id"]) - set(val))
        fold = {
            "fold": i,
            "official_test_set": name,
            "subjects": {TRAIN: train, VAL: val, TEST: sorted(takes.loc[test_sel, "subject_id"].unique())},
            TRAIN: sorted(rest.loc[rest["subject_id"].isin(train), "take_id"]),
            VAL: sorted(rest.loc[rest["subject_id"].isin(val), "take_id"]),
            TEST: sorted(takes.loc[test_sel, "take_id"]),
        }
        if not val:  # val_fraction 0: no validation split at all (an empty one would read as a leak)
            del fold[VAL], fold["subjects"][VAL]
        folds.append(fold)
    return {"protocol": "official", "folds": folds}


def _official_val(rest: pd.DataFrame, fraction: float, seed: int, fold: int) -> list[str]:
    """Training subjects held out for early stopping: about `fraction` of them, every class covered first."""
    subjects = sorted(rest["subject_id"].unique())
    n = int(round(fraction * len(subjects)))
    if not n or len(subjects) < 2:
        return []
    rng = np.random.default_rng([seed, fold, 7])
    order = [subjects[j] for j in rng.permutation(len(subjects))]
    classes_of = {sid: set(labels) for sid, labels in rest.groupby("subject_id")["label"]}
    val: list[str] = []
    covered: set[str] = set()
    for s in order:  # one subject per class not yet covered, so val lacks no class
        if classes_of[s] - covered and len(val) < len(subjects) - 1:
            val.append(s)
            covered |= classes_of[s]
    for s in order:
        if len(val) >= min(n, len(subjects) - 1):
            break
        if s not in val:
            val.append(s)
    return sorted(val)
