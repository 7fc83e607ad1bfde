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


def _unbalanced() -> tuple[np.ndarray, list[int], list[str], list[str], list[float]]:
    """A pilot that lost clips: one subject with 2 unseen takes, three with 12; 3 runs. The subjects' means."""
    per_subject = {"a": [-1.0, 0.0], "b": [1.0, 1.0] + [0.0] * 10, "c": [0.0] * 12, "d": [1.0] + [0.0] * 11}
    diff, run, subj = [], [], []
    for r in range(3):
        for s, d in per_subject.items():
            diff += d
            run += [r] * len(d)
            subj += [s] * len(d)
    return np.array(diff), run, subj, ["test_unseen"] * len(diff), [float(np.mean(d)) for d in per_subject.values()]


def test_with_unbalanced_subjects_every_draw_of_a_group_mean_stays_within_the_subjects_means() -> None:
    """A group mean is a ratio of weighted sums: negative bootstrap weights (the 1 + c (count - 1) rescaling)
    throw draws outside the data's range when subjects have unequal take counts; Rao-Wu with m = n - 1 cannot."""
    diff, run, subj, group, means = _unbalanced()
    r = joint_bootstrap(diff, run, subj, group, {"test_unseen": 1.0}, n_boot=4000)
    draws = r["draws"]
    assert len(draws) > 3000
    assert min(means) - 1e-12 <= draws.min() and draws.max() <= max(means) + 1e-12, (draws.min(), draws.max())


def test_rescaled_weights_are_never_negative_and_keep_the_sample_variance() -> None:
    """Rao-Wu with m = n - 1: weights count * n / (n - 1) >= 0, summing to n; a mean's bootstrap variance s^2/n."""
    from pipeline.learn.stats import _rescaled_weights

    rng = np.random.default_rng(0)
    for n in (2, 3, 7):
        w = _rescaled_weights(rng, n, 20000)
        assert (w >= 0).all() and np.allclose(w.sum(axis=1), n)
        x = rng.normal(size=n)
        boot = w @ x / n
        assert np.var(boot, ddof=1) == pytest.approx(np.var(x, ddof=1) / n, rel=0.05)
    assert (_rescaled_weights(rng, 1, 5) == 1.0).all()  # one run: nothing to resample


def test_one_test_subject_is_not_testable() -> None:
    """One run and one subject gave an SE of 1e-16, p 0, a zero-width interval: now no p and a reason."""
    diff = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    r = joint_bootstrap(diff, [0] * 5, ["a"] * 5, ["test_unseen"] * 5, {"test_unseen": 1.0}, n_boot=200)
    assert r["p_value"] is None and r["ci"] is None and r["ci_percentile"] is None
    assert r["estimate"] == pytest.approx(0.6) and "one test subject" in r["reason"]
    many_runs = joint_bootstrap(
        np.tile(diff, 3), [0] * 5 + [1] * 5 + [2] * 5, ["a"] * 15, ["test_unseen"] * 15, {"test_unseen": 1.0}
    )
    assert many_runs["p_value"] is None


def test_a_constant_nonzero_contrast_is_not_testable_and_all_zero_differences_give_p_1() -> None:
    """Every subject and run alike: the SE is rounding noise; a nonzero estimate gets no p (it got p = 0)."""
    subj = [s for s in "abc" for _ in range(10)]
    same = np.tile([0.1] * 10, 3)  # per-take differences 0.1 (a seed-averaged score): the mean is never exactly 0.1
    r = joint_bootstrap(same, [0] * 30, subj, ["test_unseen"] * 30, {"test_unseen": 1.0}, n_boot=200)
    assert r["p_value"] is None and r["ci"] is None and "same contrast" in r["reason"]
    zero = joint_bootstrap(np.zeros(30), [0] * 30, subj, ["test_unseen"] * 30, {"test_unseen": 1.0}, n_boot=200)
    assert zero["p_value"] == 1.0 and zero["ci"] == [0.0, 0.0] and zero["reason"] is None
