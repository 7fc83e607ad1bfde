"""The paired verdict on synthetic results whose truth is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from pipeline.learn.verdict import min_detectable_difference, paired_power, paired_t, paired_verdict

SUBJECTS = np.repeat([f"s{i}" for i in range(8)], 30)  # 8 test subjects, 30 takes each


def _results(
    rng: np.random.Generator, acc_base: float, acc_cand: float, seeds: int = 10, seed_sd: float = 0.02
) -> tuple[dict, dict]:
    """Per-seed correctness of two models: each seed shifts both models' accuracy alike (shared
    features and seed) plus its own training noise; takes differ in difficulty."""
    difficulty = rng.normal(0, 0.5, len(SUBJECTS))
    base, cand = {}, {}
    for s in range(seeds):
        shared = rng.normal(0, seed_sd)
        for acc, out in ((acc_base, base), (acc_cand, cand)):
            p = np.clip(acc + shared + rng.normal(0, seed_sd) + 0.1 * difficulty, 0, 1)
            out[s] = rng.random(len(SUBJECTS)) < p
    return base, cand


def test_without_an_effect_the_test_rarely_declares_one() -> None:
    rng = np.random.default_rng(0)
    runs = [paired_verdict(*_results(rng, 0.7, 0.7), SUBJECTS, n_boot=300) for _ in range(100)]
    false_t = np.mean([r["p_value"] < 0.05 for r in runs])
    assert false_t <= 0.12  # nominal 5 %; 100 runs
    assert np.mean([r["significant"] for r in runs]) <= 0.08
    assert np.median([r["p_value"] for r in runs]) > 0.3
    assert not any(r["claim_holds"] and r["gain"] < 0 for r in runs)


def test_a_large_effect_is_detected_with_its_interval_around_the_truth() -> None:
    rng = np.random.default_rng(0)
    v = paired_verdict(*_results(rng, 0.6, 0.75), SUBJECTS, baseline="lstm", candidate="mv_lstm")
    assert v["significant"] and v["claim_holds"]
    assert v["p_value"] < 0.001 and v["boot_p_value"] < 0.01
    assert v["gain"] == pytest.approx(0.15, abs=0.03)
    assert v["ci95"][0] < v["gain"] < v["ci95"][1] and v["boot_ci95"][0] < 0.15 < v["boot_ci95"][1]
    assert v["mdd"] < 0.15
    assert "mv_lstm is better than lstm" in v["sentence"]


def test_a_loss_is_called_a_loss() -> None:
    v = paired_verdict(*_results(np.random.default_rng(2), 0.75, 0.6), SUBJECTS)
    assert v["significant"] and not v["claim_holds"] and v["gain"] < 0
    assert "worse" in v["sentence"]


def test_a_gain_from_one_subject_only_is_not_a_finding() -> None:
    """Seeds agree perfectly, so the t-test rejects; the bootstrap over subjects does not."""
    take = np.arange(len(SUBJECTS))
    base = {s: take % 40 == s for s in range(10)}  # a few right answers that move with the seed
    cand = {s: (take % 40 == (s + 7) % 40) | (SUBJECTS == "s3") for s in range(10)}  # as many, plus all of s3
    v = paired_verdict(base, cand, SUBJECTS)
    assert v["p_value"] < 0.001
    assert v["boot_ci95"][0] <= 0 < v["boot_ci95"][1] or v["boot_p_value"] >= 0.05
    assert not v["significant"] and not v["claim_holds"]
    assert "no difference" in v["sentence"]


def test_the_t_test_is_scipys_paired_test_on_per_seed_accuracies() -> None:
    base, cand = _results(np.random.default_rng(3), 0.7, 0.72)
    v = paired_verdict(base, cand, SUBJECTS)
    a = np.array([base[s].mean() for s in range(10)])
    b = np.array([cand[s].mean() for s in range(10)])
    assert v["p_value"] == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-2)
    assert v["gain"] == pytest.approx((b - a).mean(), abs=1e-4)
    assert v["per_seed_gain"]["3"] == pytest.approx(b[3] - a[3], abs=1e-4)
    json.dumps(v)  # plain types only, ready for metrics.json


def test_the_minimum_detectable_difference_has_the_stated_power() -> None:
    sd, n = 0.04, 10
    mdd = min_detectable_difference(sd, n, alpha=0.05, power=0.8)
    assert paired_power(mdd, sd, n) == pytest.approx(0.8, abs=1e-6)
    rng = np.random.default_rng(4)
    diffs = rng.normal(mdd, sd, (4000, n))
    rejected = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.03)  # simulation agrees with the formula
    assert min_detectable_difference(sd, 40) < mdd  # more seeds, smaller detectable difference


def test_degenerate_designs_give_no_test_instead_of_nan() -> None:
    one = paired_verdict({0: np.ones(len(SUBJECTS))}, {0: np.zeros(len(SUBJECTS))}, SUBJECTS)
    assert one["p_value"] is None and one["ci95"] is None and not one["significant"]
    assert "no test" in one["sentence"]
    same = paired_t(np.array([0.02, 0.02, 0.02]))
    assert same["sd"] == 0.0 and same["p_value"] == 0.0


def test_mismatched_pairs_or_lengths_are_clear_errors() -> None:
    n = len(SUBJECTS)
    with pytest.raises(ValueError, match="one model only"):
        paired_verdict({0: np.ones(n), 1: np.ones(n)}, {0: np.ones(n)}, SUBJECTS)
    with pytest.raises(ValueError, match="one correctness value per take"):
        paired_verdict({0: np.ones(n - 1)}, {0: np.ones(n - 1)}, SUBJECTS)
