"""Inference for paired model comparisons: a joint bootstrap over test subjects and training runs, Holm.

Why: two sources of chance move a comparison of two models. Training (which extractor and which
initialisation a run drew) and the sampling of people (which test subjects were recorded). A t-test
over seeds ignores the second and, when seeds share a feature extractor, counts one replicate many
times (pseudo-replication); a bootstrap over subjects ignores the first. Here both are resampled at
once (a two-way, "pigeonhole" bootstrap, Owen 2007): each draw redraws the independent runs and the
test subjects, with replacement and independently, and recomputes the endpoint from the kept
per-take differences. A run is the unit that is independent: runs that share an extractor are one
run (the caller averages them), so a shared extractor is never counted twice.

The endpoint is a contrast of group means of per-take paired differences (candidate minus baseline
correctness on the same take, same run): `{"test_unseen": 1}` is the gain on unseen modes,
`{"test_unseen": 1, "test_seen": -1}` the drop interaction (gain on unseen minus gain on seen), the
pre-registered primary endpoint. Every spread here uses ddof=1.
Pure functions over arrays; the evaluate stage builds the arrays from the predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

DDOF = 1  # every standard deviation in the reports: sample SD
SE_RTOL = 1e-9  # an SE below this share of the largest |difference| is rounding noise, not spread


Labels = Sequence[Any] | np.ndarray  # run, subject or group of each difference


def _codes(values: Labels) -> tuple[np.ndarray, np.ndarray]:
    names, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    return names, inverse


def _kept(group: Labels, contrast: Mapping[str, float]) -> np.ndarray:
    """Which differences lie in a group the contrast names."""
    return np.array([str(g) in contrast for g in group], dtype=bool)


def _cells(
    diff: np.ndarray, run: Labels, subject: Labels, group: Labels, contrast: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], int, int]:
    """Sums and counts of the differences per (run, subject, contrast group); the contrast's coefficients."""
    groups = list(contrast)
    gidx = {g: i for i, g in enumerate(groups)}
    keep = _kept(group, contrast)
    diff = np.asarray(diff, dtype=float)[keep]
    runs, r = _codes(np.asarray(run, dtype=str)[keep])
    subjects, s = _codes(np.asarray(subject, dtype=str)[keep])
    k = np.array([gidx[str(g)] for g in np.asarray(group, dtype=str)[keep]], dtype=np.int64)
    shape = (len(runs), len(subjects), len(groups))
    sums = np.zeros(shape)
    counts = np.zeros(shape)
    np.add.at(sums, (r, s, k), diff)
    np.add.at(counts, (r, s, k), 1.0)
    coef = np.array([float(contrast[g]) for g in groups])
    return sums, counts, coef, groups, len(runs), len(subjects)


def _statistic(sums: np.ndarray, counts: np.ndarray, coef: np.ndarray, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The contrast for each row of run weights w (B, R) and subject weights v (B, S); NaN if a group is empty."""
    num = np.einsum("br,rsk,bs->bk", w, sums, v)
    den = np.einsum("br,rsk,bs->bk", w, counts, v)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = num / den
    return means @ coef


def _rescaled_weights(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """Rao and Wu's rescaled weights with m = n - 1: draw n - 1 of the n units with replacement, weight each by
    its count times n / (n - 1). A linear mean gets the variance a sample SD (ddof=1) gives, not (n-1)/n of it;
    the weights sum to n and are never negative, so a ratio mean stays inside the range of the units' means
    (the 1 + sqrt(n/(n-1)) (count - 1) form goes negative and, with unbalanced units, throws draws outside it).
    One unit: weight 1, nothing to resample."""
    if n < 2:
        return np.ones((draws, n))
    counts = rng.multinomial(n - 1, np.full(n, 1 / n), size=draws).astype(float)
    return counts * (n / (n - 1))


def joint_bootstrap(
    diff: np.ndarray,
    run: Labels,
    subject: Labels,
    group: Labels,
    contrast: Mapping[str, float],
    *,
    n_boot: int = 4000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Estimate, interval, SE and two-sided p of a contrast of paired per-take differences.

    diff: candidate minus baseline correctness (or any paired per-take score difference), one entry
    per (run, take); run: the independent training run of each entry (runs sharing a feature extractor
    must be one run); subject: the test subject of the take; group: the test set of the take
    (e.g. test_seen / test_unseen); contrast: group -> coefficient. Entries in groups the contrast
    does not name are ignored.

    Each draw resamples runs and subjects independently with replacement (rescaled weights); the SE
    is the SD of those joint draws. With a few runs a normal reference would be too liberal, so the
    interval and p use a t reference whose degrees of freedom (Satterthwaite) come from the two
    one-way components (runs only, subjects only): few runs that dominate the variance give few df.
    The percentile interval of the joint draws is reported beside it, and the draws themselves.

    Not testable (p, interval and percentile interval None, `reason` says why): one test subject, or a
    nonzero contrast that every subject and run gives alike (the SE is rounding noise). When every
    subject and run gives a contrast of zero (e.g. the models agree on every take): p 1, a zero-width interval.
    """
    sums, counts, coef, groups, n_runs, n_subjects = _cells(diff, run, subject, group, contrast)
    if n_runs == 0 or n_subjects == 0:
        raise ValueError("joint_bootstrap: no difference in the contrast's groups")
    missing = [g for g, n in zip(groups, counts.sum(axis=(0, 1))) if n == 0]
    if missing:
        raise ValueError(f"joint_bootstrap: no take in group(s) {', '.join(missing)}")
    one_r, one_s = np.ones((1, n_runs)), np.ones((1, n_subjects))
    est = float(_statistic(sums, counts, coef, one_r, one_s)[0])
    rng = np.random.default_rng(seed)
    w = _rescaled_weights(rng, n_runs, n_boot)
    v = _rescaled_weights(rng, n_subjects, n_boot)
    finite = lambda x: x[np.isfinite(x)]  # noqa: E731 - a draw with no subject in some group has no contrast
    joint = finite(_statistic(sums, counts, coef, w, v))
    by_run = finite(_statistic(sums, counts, coef, w, np.ones((n_boot, n_subjects))))
    by_subject = finite(_statistic(sums, counts, coef, np.ones((n_boot, n_runs)), v))
    se = float(np.std(joint, ddof=DDOF))
    var_r = float(np.var(by_run, ddof=DDOF)) if n_runs > 1 else 0.0
    var_s = float(np.var(by_subject, ddof=DDOF)) if n_subjects > 1 else 0.0
    parts = (var_r**2 / (n_runs - 1) if n_runs > 1 else 0.0) + (var_s**2 / (n_subjects - 1) if n_subjects > 1 else 0.0)
    df = (var_r + var_s) ** 2 / parts if parts > 0 else float("inf")
    scale = float(np.max(np.abs(np.asarray(diff, dtype=float)[_kept(group, contrast)])))
    flat = se <= SE_RTOL * scale  # rounding noise of a constant statistic is not a spread
    reason: str | None = None
    if n_subjects < 2:
        reason = "one test subject: the sampling of people cannot be estimated"
    elif len(joint) < 2:
        reason = "too few bootstrap draws keep a subject in every group of the contrast"
    elif flat and est != 0.0:
        reason = "every subject and run gives the same contrast: no spread to test against"
    out: dict[str, Any] = {
        "estimate": est,
        "se": se,
        "se_runs": float(np.sqrt(var_r)),
        "se_subjects": float(np.sqrt(var_s)),
        "n_runs": n_runs,
        "n_subjects": n_subjects,
        "n_takes": int(round(counts.sum() / n_runs)),
        "n_boot": int(len(joint)),
        "alpha": alpha,
        "draws": joint,
        "reason": reason,
    }
    if reason is not None:
        return out | {"ci": None, "ci_percentile": None, "df": float("nan"), "p_value": None}
    if flat:  # every subject and run gives a contrast of zero (e.g. the models agree on every take)
        return out | {"ci": [est, est], "ci_percentile": [est, est], "df": float(df), "p_value": 1.0}
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * stats.t.sf(abs(est) / se, df))
    lo, hi = (float(x) for x in np.quantile(joint, [alpha / 2, 1 - alpha / 2]))
    return out | {"ci": [est - half, est + half], "ci_percentile": [lo, hi], "df": float(df), "p_value": p}


def holm(p_values: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1); None stays None and does not count."""
    named = sorted(((k, p) for k, p in p_values.items() if p is not None), key=lambda kv: kv[1])
    m = len(named)
    out: dict[str, float | None] = {k: None for k in p_values}
    running = 0.0
    for i, (k, p) in enumerate(named):
        running = max(running, min(1.0, (m - i) * float(p)))
        out[k] = running
    return out


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample SD (ddof=1; None with fewer than 2 values): one convention for every reported spread."""
    x = np.asarray(values, dtype=float)
    if not len(x):
        return None, None
    return float(x.mean()), (float(x.std(ddof=DDOF)) if len(x) > 1 else None)
