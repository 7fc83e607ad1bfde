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


MIN_SUBJECTS = 3  # one each to test, validate and train: the least a subject-independent protocol needs


def _enough_subjects(n: int, setting: str) -> None:
    if n < MIN_SUBJECTS:
        raise SplitError(
            f"{setting}: the data has {n} subject(s); a subject-independent protocol needs at least {MIN_SUBJECTS} "
            "(one to test, one to validate, one to train)"
        )


def subject_groups(takes: pd.DataFrame, k: int, seed: int, setting: str = "split.subject_kfold_k") -> list[list[str]]:
    """k groups of subjects with label counts as even as a greedy assignment makes them.

    `setting` names the parameter that asked for k, so a request the data cannot fill is one line saying
    which value works.
    """
    subjects = sorted(takes["subject_id"].unique())
    if k < 2 or k > len(subjects):
        _enough_subjects(len(subjects), setting)
        raise SplitError(
            f"cannot make {k} subject folds from {len(subjects)} subjects ({setting} is {k}; "
            f"set it between 2 and {len(subjects)})"
        )
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


def _seen_unseen_fold(
    takes: pd.DataFrame,
    fold: int,
    train: list[str],
    val: list[str],
    test: list[str],
    seen: set[str],
    unseen: set[str],
    **extra: object,
) -> dict:
    """One fold of a seen/unseen protocol: train and val on the seen modes, the test subjects on both."""
    return {
        "fold": fold,
        **extra,
        "subjects": {TRAIN: train, VAL: val, TEST: test},
        "seen_modes": sorted(seen),
        "unseen_modes": sorted(unseen),
        TRAIN: _ids(takes, train, seen),
        VAL: _ids(takes, val, seen),
        TEST_SEEN: _ids(takes, test, seen),
        TEST_UNSEEN: _ids(takes, test, unseen),
    }


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
            f"split.seen_modes: seen mode(s) {', '.join(missing)} not in the data; "
            f"modes present: {', '.join(sorted(all_modes))}"
        )
    seen = set(seen_modes)
    unseen = all_modes - seen
    if not unseen:
        raise SplitError("split.seen_modes lists every mode: nothing is left to test as unseen")
    folds = []
    for i, train, val, test in _rotate(subject_groups(takes, k, seed, "split.unseen_mode_folds"), val_subjects, seed):
        folds.append(_seen_unseen_fold(takes, i, train, val, test, seen, unseen))
    return {"protocol": "unseen_mode", "folds": folds}


def leave_one_mode_out(takes: pd.DataFrame, test_subjects: int, val_subjects: int, seed: int) -> dict:
    """One fold per mode: trained on every other mode, tested on held-out subjects in that mode."""
    subjects = sorted(takes["subject_id"].unique())
    _enough_subjects(len(subjects), "split.leave_one_mode_out")
    if test_subjects > len(subjects) - 2:
        raise SplitError(
            f"split.lomo_test_subjects is {test_subjects} but the data has {len(subjects)} subjects: set it to at "
            f"most {len(subjects) - 2} (one subject each must remain to validate and to train)"
        )
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


FACTORS = ("pose", "illumination")


def mode_factor(modes: pd.Series, parts: list[str], factor: str) -> pd.Series:
    """One factor of each mode: the `/`-separated part of the mode that `split.mode_parts` names `factor`.

    Why: ingest writes a mode as its fields joined by `/` (pipeline/modes.py: `yaw+0_pitch+0/frontal` is
    pose then illumination), so the factor is read from the mode ingest stored, never recomputed.
    """
    if factor not in parts:
        raise SplitError(
            f"split.mode_parts ({', '.join(parts) or 'empty'}) names no part {factor!r}: "
            f"list it at its place in the mode (modes look like {modes.iloc[0]!r})"
        )
    index = parts.index(factor)
    parts_of = [str(m).split("/") for m in modes]
    short = [m for m, p in zip(modes, parts_of) if len(p) <= index]
    if short:
        raise SplitError(
            f"split.mode_parts puts {factor!r} at part {index + 1} but mode {short[0]!r} has "
            f"{len(str(short[0]).split('/'))} part(s): list the parts of ingest.mode_fields' modes"
        )
    return pd.Series([p[index] for p in parts_of], index=modes.index, name=factor)


def _factor_folds(values: list[str], groups: int, rotation: str) -> list[tuple[str, int]]:
    """(held-out value, test subject group) per fold: every pairing (crossed) or one cycle covering both (rotated)."""
    if rotation == "crossed":
        return [(v, g) for v in values for g in range(groups)]
    return [(values[i % len(values)], i % groups) for i in range(max(len(values), groups))]


def leave_one_factor_out(
    takes: pd.DataFrame,
    factor: str,
    parts: list[str],
    subject_groups_k: int,
    val_subjects: int,
    seed: int,
    rotation: str = "rotated",
) -> dict:
    """Hold one value of a mode factor (a pose, an illumination) out of training while the others vary.

    Why: the paper's claim is robustness to an unseen *value* of a mode of variation that does vary
    in training; training on one pose and testing on others (`unseen_mode`) is extrapolation along a
    factor never seen varying. Each fold holds out one value and one group of test subjects: training
    and validation subjects contribute their takes in every other value (all values of the other
    factors), the test subjects are scored on the same training values (`test_seen`) and on the held-out
    one (`test_unseen`). `rotation`: `rotated` cycles values and subject groups together (max of the
    two folds, every subject tested once), `crossed` pairs every value with every group.
    """
    name = f"leave_one_{factor}_out"
    setting = f"split.{name}"
    value_of = mode_factor(takes["mode"], parts, factor)
    values = sorted(value_of.unique())
    if len(values) < 3:
        raise SplitError(
            f"{setting}: the data has {len(values)} {factor} value(s) ({', '.join(values)}); holding one out must "
            f"leave training at least 2 that vary, so it needs at least 3 (set {setting}: false)"
        )
    groups = subject_groups(takes, subject_groups_k, seed, "split.factor_subject_groups")
    modes_of = takes.assign(_value=value_of).groupby("_value")["mode"].agg(lambda m: sorted(set(m)))
    folds = []
    for i, (held_out, g) in enumerate(_factor_folds(values, len(groups), rotation)):
        test = groups[g]
        rest = sorted(s for grp in groups for s in grp if s not in test)
        val = _val_subjects(rest, val_subjects, seed, i)
        train = [s for s in rest if s not in val]
        unseen = set(modes_of[held_out])
        seen = set(takes["mode"]) - unseen
        folds.append(_seen_unseen_fold(takes, i, train, val, test, seen, unseen, factor=factor, held_out=held_out))
    return {"protocol": name, "folds": folds}


def incomplete_subjects(takes: pd.DataFrame, classes: list[str]) -> dict[str, list[str]]:
    """Subject -> the classes it has no take of in some mode of its (only subjects that lack one).

    Why: a pilot loses a clip and one subject lacks a class; that is incomplete data, not a leak, and
    `split.drop_incomplete` decides what to leave out.
    """
    # per subject and mode: the mode protocols test a subject in each of its modes (a lost left-camera clip
    # leaves that subject's left mode without the class even when the right camera has it)
    keys = ["subject_id", "mode"] if "mode" in takes else ["subject_id"]
    missing: dict[str, set[str]] = {}
    for key, h in takes.groupby(keys)["label"].agg(set).items():
        sid = key[0] if isinstance(key, tuple) else key
        gap = {c for c in classes if c not in h}
        if gap:
            missing.setdefault(str(sid), set()).update(gap)
    return {s: sorted(c) for s, c in sorted(missing.items())}


def drop_incomplete(takes: pd.DataFrame, how: str) -> tuple[pd.DataFrame, dict]:
    """Leave out the subjects (`subjects`) or the classes (`classes`) that make some subject incomplete.

    Returns the kept takes and what was left out, for the report; `none` keeps everything.
    """
    classes = sorted(takes["label"].unique())
    gaps = incomplete_subjects(takes, classes)
    report: dict = {"incomplete_subjects": gaps, "dropped_subjects": [], "dropped_classes": []}
    before = len(takes)
    if how == "subjects" and gaps:
        report["dropped_subjects"] = sorted(gaps)
        takes = takes[~takes["subject_id"].isin(gaps)]
    elif how == "classes" and gaps:
        dropped = sorted({c for missing in gaps.values() for c in missing})
        report["dropped_classes"] = dropped
        takes = takes[~takes["label"].isin(dropped)]
    report["dropped_takes"] = before - len(takes)
    return takes.reset_index(drop=True), report


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
