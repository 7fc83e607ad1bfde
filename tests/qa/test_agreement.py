"""Agreement and aggregation equal the reference packages on the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.qa import agreement as ag
from pipeline.qa.aggregate import dawid_skene, majority_vote, spammer_score, top_confusion, vote_counts


def _random_ratings(seed: int, n_items: int = 60, n_ann: int = 5, K: int = 4, missing: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, K, n_items)
    data = np.where(rng.random((n_ann, n_items)) < 0.7, truth, rng.integers(0, K, (n_ann, n_items))).astype(float)
    data[rng.random(data.shape) < missing] = np.nan
    return data


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_krippendorff_alpha_equals_the_krippendorff_package(seed: int) -> None:
    import krippendorff

    data = _random_ratings(seed)
    ours = ag.krippendorff_alpha_nominal(data)
    theirs = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert ours == pytest.approx(theirs, abs=1e-10)


def test_per_class_alpha_equals_the_package_on_binarised_data() -> None:
    import krippendorff

    data = _random_ratings(3)
    for c, a in ag.per_class_alpha(data, 4).items():
        binary = np.where(np.isnan(data), np.nan, (data == c).astype(float))
        assert a == pytest.approx(
            krippendorff.alpha(reliability_data=binary, level_of_measurement="nominal"), abs=1e-10
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_fleiss_kappa_equals_statsmodels(seed: int) -> None:
    from statsmodels.stats import inter_rater

    data = _random_ratings(seed, missing=0.0)
    table = ag.category_counts(data, 4)
    assert ag.fleiss_kappa(table) == pytest.approx(inter_rater.fleiss_kappa(table, method="fleiss"), abs=1e-10)
    kappa, items, raters = ag.fleiss_on_complete_items(data, 4)
    assert items == data.shape[1] and raters == data.shape[0]


def test_fleiss_needs_a_fixed_number_of_raters() -> None:
    with pytest.raises(ValueError, match="same number"):
        ag.fleiss_kappa(np.array([[2, 1], [1, 1]]))


def test_cohen_kappa_equals_scikit_learn() -> None:
    from sklearn.metrics import cohen_kappa_score

    data = _random_ratings(4, missing=0.2)
    for i in range(data.shape[0]):
        for j in range(i + 1, data.shape[0]):
            both = ~np.isnan(data[i]) & ~np.isnan(data[j])
            assert ag.cohen_kappa(data[i, both], data[j, both]) == pytest.approx(
                cohen_kappa_score(data[i, both], data[j, both]), abs=1e-10
            )
    pairs = ag.pairwise_cohen(data, ["a", "b", "c", "d", "e"])
    assert set(pairs) == {f"{x}|{y}" for k, x in enumerate("abcde") for y in "abcde"[k + 1 :]}


def test_perfect_agreement_is_one_and_chance_is_near_zero() -> None:
    same = np.tile(np.arange(5, dtype=float) % 3, (3, 1))
    assert ag.krippendorff_alpha_nominal(same) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert abs(ag.krippendorff_alpha_nominal(rng.integers(0, 3, (4, 400)).astype(float))) < 0.05


def _crowd(seed: int, n_items: int = 300, K: int = 4) -> tuple[pd.DataFrame, np.ndarray]:
    """Two good annotators, one 60 % one, one spammer; long table and the truth."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, K, n_items)
    rows = []
    for a, acc in enumerate((0.9, 0.85, 0.6, 0.0)):
        for i in range(n_items):
            if rng.random() < 0.8:
                lab = truth[i] if rng.random() < acc else rng.integers(0, K)
                rows.append((i, a, int(lab)))
    return pd.DataFrame(rows, columns=["item", "annotator", "label"]), truth


def test_dawid_skene_matches_crowd_kit_and_beats_majority_vote() -> None:
    from crowdkit import aggregation

    df, truth = _crowd(0)
    counts = vote_counts(df["item"].to_numpy(), df["annotator"].to_numpy(), df["label"].to_numpy(), len(truth), 4, 4)
    ours = dawid_skene(counts, smoothing=0.0)["posterior"].argmax(1)
    theirs = aggregation.DawidSkene(n_iter=100).fit_predict(df.rename(columns={"item": "task", "annotator": "worker"}))
    theirs = theirs.reindex(range(len(truth))).to_numpy()
    seen = ~pd.isna(theirs)
    assert (ours[seen] == theirs[seen].astype(int)).mean() > 0.98
    mv, _ = majority_vote(counts)
    assert (ours == truth).mean() > (mv == truth).mean()


def test_spammer_score_and_top_confusion() -> None:
    perfect = np.eye(3)
    spammer = np.full((3, 3), 1 / 3)
    assert spammer_score(perfect) == pytest.approx(1.0) and spammer_score(spammer) == pytest.approx(0.0)
    swap = np.array([[0.3, 0.7, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    assert top_confusion(swap) == (0, 1, 0.7)
    assert top_confusion(swap, np.array([False, True, True])) == (1, 0, pytest.approx(0.1))
