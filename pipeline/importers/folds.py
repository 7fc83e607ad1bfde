"""Five-fold official splits (DFEW, MAFW): each clip's label and the one test set it belongs to.

A clip is in the test list of exactly one set and the train lists of the other four; that is
checked, not assumed: a clip in two test sets or with two labels is excluded with the reason, and
a set whose train list is not the complement of its test list is reported in the notes.
"""

from __future__ import annotations

from pipeline.importers.common import ImportResult


def merge_sets(sets: dict[str, dict[str, dict[str, str]]], res: ImportResult, where: str) -> dict[str, tuple[str, str]]:
    """{set k: {"train"|"test": {clip: code}}} -> {clip: (code, test set k)}; conflicts are exclusions."""
    label: dict[str, str] = {}
    fold: dict[str, str] = {}
    bad: set[str] = set()
    for k in sorted(sets, key=lambda s: int(s) if s.isdigit() else 0):
        for part in ("train", "test"):
            for clip, code in sets[k].get(part, {}).items():
                if clip in label and label[clip] != code:
                    if clip not in bad:
                        res.exclude(
                            f"{where}:{clip}",
                            "conflicting_labels",
                            f"{where}: clip {clip} has labels {label[clip]!r} and {code!r} in different lists",
                        )
                    bad.add(clip)
                label.setdefault(clip, code)
                if part == "test":
                    if clip in fold and fold[clip] != k:
                        if clip not in bad:
                            res.exclude(
                                f"{where}:{clip}",
                                "conflicting_folds",
                                f"{where}: clip {clip} is in the test lists of set {fold[clip]} and set {k}",
                            )
                        bad.add(clip)
                    fold.setdefault(clip, k)
    everyone = set(label) - bad
    for k, parts in sets.items():
        test, train = set(parts.get("test", {})) - bad, set(parts.get("train", {})) - bad
        if train and train != everyone - test:
            res.notes.append(
                f"{where} set {k}: the train list is not the complement of the test list "
                f"({len(train)} vs {len(everyone - test)} clips); the protocol uses the complement"
            )
    no_fold = sorted(everyone - set(fold))
    for clip in no_fold:
        res.exclude(f"{where}:{clip}", "no_test_fold", f"{where}: clip {clip} is in no set's test list")
    return {c: (label[c], fold[c]) for c in sorted(everyone) if c in fold}
