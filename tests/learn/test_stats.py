"""The joint bootstrap and Holm on simulated data whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.learn.stats import holm, joint_bootstrap, mean_sd

DROP = {"test_unseen": 1.0, "test_seen": -1.0}


def _simulate(
    rng: np.random.Generator,
    *,
    runs: int = 5,
    subjects: int = 24,
    takes: tuple[int, int] = (18, 36),
    interaction: float = 0.0,
    tau_run: float = 0.03,
    tau_subject: float = 0.05,
) -> tuple[np.ndarray, list[int], list[int], list[str]]:
    """Paired per-take differences (candidate - baseline correctness) on seen and unseen takes.

    Each run shifts the candidate's gain on each test set by its own amount (a run x variant x set
    interaction: what shared extractors make look like an effect), each subject too; `interaction` is
    the true drop interaction (gain on unseen minus gain on seen)."""
    diff, run, subj, group = [], [], [], []
    ability = rng.normal(0, 0.1, subjects)
    subject_gain = rng.normal(0, tau_subject, (subjects, 2))
    for r in range(runs):
        run_gain = rng.normal(0, tau_run, 2)
        for s in range(subjects):
            for k, n in enumerate(takes):
                p_base = np.clip(0.7 - 0.15 * k + ability[s], 0.02, 0.98)
                p_cand = np.clip(p_base + run_gain[k] + subject_gain[s, k] + interaction * k, 0.02, 0.98)
                u = rng.random(n)  # the two models find the same takes hard
                d = (u < p_cand).astype(float) - (u < p_base)
                diff.append(d)
                run += [r] * n
                subj += [s] * n
                group += [("test_seen", "test_unseen")[k]] * n
    return np.concatenate(diff), run, subj, group


def test_on_null_data_the_joint_test_rejects_at_about_the_nominal_rate() -> None:
    """No true interaction, training and subject noise both present: rejections near 5 % (not the 11-24 %
    of a per-seed t-test over seeds sharing extractors)."""
    rng = np.random.default_rng(1)
    p = [
        joint_bootstrap(*_simulate(rng), DROP, n_boot=400, seed=i)["p_value"] for i in range(200)
    ]  # 200 simulated experiments
    rate = float(np.mean(np.array(p) < 0.05))
    assert 0.01 <= rate <= 0.09, rate
    assert 0.35 < float(np.median(p)) < 0.65  # p roughly uniform under the null


def test_with_few_runs_and_large_training_noise_the_test_stays_near_nominal() -> None:
    """3 runs whose noise dominates: a normal reference would reject ~16 %; the t reference with few df does not."""
    rng = np.random.default_rng(2)
    p = [
        joint_bootstrap(*_simulate(rng, runs=3, tau_run=0.06, tau_subject=0.02), DROP, n_boot=400, seed=i)["p_value"]
        for i in range(200)
    ]
    assert float(np.mean(np.array(p) < 0.05)) <= 0.09


def test_a_real_interaction_is_found_and_its_interval_covers_it() -> None:
    r = joint_bootstrap(*_simulate(np.random.default_rng(3), interaction=0.12, runs=8), DROP, n_boot=2000)
    assert r["p_value"] < 0.01 and r["ci"][0] < 0.12 < r["ci"][1]
    assert r["estimate"] == pytest.approx(0.12, abs=0.05)
    assert r["n_runs"] == 8 and r["n_subjects"] == 24 and r["n_takes"] == 24 * 54


def test_the_estimate_is_the_contrast_of_group_means_and_other_groups_are_ignored() -> None:
    diff = np.array([1.0, 0.0, 0.0, -1.0, 1.0, 1.0, 0.5])
    run = [0, 0, 1, 1, 0, 1, 0]
    subject = ["a", "b", "a", "b", "a", "b", "a"]
    group = ["test_unseen", "test_unseen", "test_unseen", "test_unseen", "test_seen", "test_seen", "val"]
    r = joint_bootstrap(diff, run, subject, group, DROP, n_boot=200)
    assert r["estimate"] == pytest.approx(np.mean([1, 0, 0, -1]) - np.mean([1, 1]))
    only_unseen = joint_bootstrap(diff, run, subject, group, {"test_unseen": 1.0}, n_boot=200)
    assert only_unseen["estimate"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no take in group"):
        joint_bootstrap(diff, run, subject, group, {"test": 1.0, "test_seen": -1.0}, n_boot=200)


def test_seeds_sharing_an_extractor_must_be_one_run_or_the_test_is_too_sure() -> None:
    """Ten seeds over two extractors: counted as ten runs the interval is narrower than the truth allows."""
    rng = np.random.default_rng(4)
    diff, run, subj, group = _simulate(rng, runs=2, tau_run=0.05)
    ten = np.concatenate([diff + rng.normal(0, 0.01, len(diff)) for _ in range(5)])  # 5 seeds per extractor
    as_runs = [f"{r}-{k}" for k in range(5) for r in run]  # wrong: every seed its own run
    as_extractors = [str(r) for _ in range(5) for r in run]
    subj5, group5 = subj * 5, group * 5
    wrong = joint_bootstrap(ten, as_runs, subj5, group5, DROP, n_boot=500)
    right = joint_bootstrap(ten, as_extractors, subj5, group5, DROP, n_boot=500)
    assert right["n_runs"] == 2 and wrong["n_runs"] == 10
    assert right["ci"][1] - right["ci"][0] > wrong["ci"][1] - wrong["ci"][0]


def test_holm_matches_hand_computed_adjustments() -> None:
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert adj["a"] == pytest.approx(0.03)  # 3 x 0.01
    assert adj["c"] == pytest.approx(0.06)  # 2 x 0.03
    assert adj["b"] == pytest.approx(0.06)  # max(1 x 0.04, 0.06): monotone
    assert adj["d"] is None
    assert holm({"x": 0.6, "y": 0.7})["y"] == 1.0


def test_spreads_are_sample_sds() -> None:
    mean, sd = mean_sd([1.0, 2.0, 3.0])
    assert mean == 2.0 and sd == pytest.approx(1.0)  # ddof 1 (ddof 0 would give 0.816)
    assert mean_sd([4.0]) == (4.0, None) and mean_sd([]) == (None, None)
