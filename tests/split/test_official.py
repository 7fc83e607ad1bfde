"""Official folds of imported datasets are reproduced exactly and pass through the same leakage checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.split.leakage import check_protocol
from pipeline.split.protocols import official
from pipeline.split.stage import eligible_takes

CLASSES = ["anger", "happiness", "sadness"]


def _dfew_like(n: int = 60) -> pd.DataFrame:
    """Clips are their own subjects; the test set of clip i is 1 + i % 5 (as a DFEW import writes it)."""
    return pd.DataFrame(
        {
            "take_id": [f"dfew-{i:05d}" for i in range(n)],
            "subject_id": [f"dfew-{i:05d}" for i in range(n)],
            "mode": "unknown_pose/unknown",
            "label": [CLASSES[i % 3] for i in range(n)],
            "official_fold": [str(1 + (i // 3) % 5) for i in range(n)],
        }
    )


def test_five_official_folds_test_exactly_the_official_test_sets() -> None:
    takes = _dfew_like()
    split = official(takes, val_fraction=0.2, seed=0)
    assert [f["official_test_set"] for f in split["folds"]] == ["1", "2", "3", "4", "5"]
    for fold in split["folds"]:
        k = fold["official_test_set"]
        expected_test = sorted(takes.loc[takes["official_fold"] == k, "take_id"])
        expected_train = sorted(takes.loc[takes["official_fold"] != k, "take_id"])
        assert fold["test"] == expected_test
        assert sorted(fold["train"] + fold["val"]) == expected_train and not set(fold["train"]) & set(fold["val"])
        assert len(fold["val"]) == round(0.2 * len(expected_train))
        assert set(takes.set_index("take_id").loc[fold["val"], "label"]) == set(CLASSES)
    hashes = {t: np.random.default_rng(i).integers(0, 2, 256).astype(bool) for i, t in enumerate(takes["take_id"])}
    assert check_protocol(split, takes, CLASSES, hashes, 4) == []


def test_train_test_official_split_is_one_fold() -> None:
    takes = _dfew_like(30).assign(official_fold=["test" if i % 3 == 0 else "train" for i in range(30)])
    split = official(takes, val_fraction=0.0, seed=0)
    assert len(split["folds"]) == 1 and split["folds"][0]["test"] == sorted(
        takes.loc[takes["official_fold"] == "test", "take_id"]
    )
    assert "val" not in split["folds"][0] and len(split["folds"][0]["train"]) == 20


def test_a_subject_in_two_official_sets_is_caught_as_a_leak() -> None:
    takes = _dfew_like()
    takes.loc[0, "subject_id"] = takes.loc[3, "subject_id"]  # clip 0 (set 1) and clip 3 (set 2): one person
    split = official(takes, val_fraction=0.0, seed=0)
    problems = check_protocol(split, takes, CLASSES, {}, 4)
    assert any("official fold 0: subject dfew-00003 is in both" in p for p in problems), problems


def test_no_official_fold_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no take has an official_fold"):
        official(_dfew_like().assign(official_fold=None), 0.1, 0)


def test_dataset_labels_come_from_the_manifest_and_stay_apart_from_the_prompt() -> None:
    manifest = pd.DataFrame(
        {
            "take_id": ["a", "b", "c"],
            "subject_id": ["s1", "s2", "s3"],
            "status": "accepted",
            "yaw": [0.0, 0.0, 0.0],
            "pitch": [0.0, 0.0, 0.0],
            "illumination": "strong",
            "mode": ["VL/Strong", "VL/Weak", "VL/Dark"],
            "prompted_expression": "anger",
            "dataset_label": ["happiness", "", "sadness"],
            "official_fold": [None, None, None],
        }
    )
    align = pd.DataFrame({"take_id": ["a", "b", "c"], "status": "ok"})
    takes, excluded = eligible_takes(manifest, align, None, 1, "dataset")
    assert takes["label"].tolist() == ["happiness", "sadness"] and excluded["no_dataset_label"] == 1
    assert takes["mode"].tolist() == ["VL/Strong", "VL/Dark"]  # the mode ingest stored, not recomputed from yaw/pitch


def test_a_small_validation_share_still_covers_every_class() -> None:
    takes = _dfew_like()
    split = official(takes, val_fraction=0.02, seed=3)  # 1 of 48 training clips asked for: 3 needed
    for fold in split["folds"]:
        assert set(takes.set_index("take_id").loc[fold["val"], "label"]) == set(CLASSES)
    assert check_protocol(split, takes, CLASSES, {}, 4) == []
