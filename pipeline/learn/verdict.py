"""Is the candidate more accurate than the baseline? A paired test, not a comparison of spreads.

Why: "gain > largest seed std" with 3 seeds declared a win 15 % of the time when there was none
and found a real one-SD gain half the time. Here the unit of replication is the *pair*: the
baseline and the candidate trained on the same features with the same seed, scored on the same
test takes. Two sources of chance are measured separately:

- training (seeds): a paired t-test on the per-pair accuracy differences, with its 95 % interval
  and the minimum detectable difference of the design (the true gain this many pairs would detect
  with the given power, from the observed SD of the differences);
- sampling of people (test subjects): a seeded bootstrap that redraws test subjects with
  replacement (all takes of a drawn subject, pair-averaged), giving a second interval and p-value.

The claim holds only if both tests reject "no difference" and the gain is positive.
Pure functions over arrays; the evaluate stage collects the per-take correctness.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from scipy import optimize, stats


def paired_t(diffs: np.ndarray, alpha: float = 0.05) -> dict:
    """Mean, SD, (1 - alpha) t interval and two-sided p-value of paired differences."""
    n = len(diffs)
    mean = float(np.mean(diffs))
    if n < 2:
        return {"mean": mean, "sd": None, "ci": None, "p_value": None}
    sd = float(np.std(diffs, ddof=1))
    if sd == 0.0:  # every pair differs by the same amount: no spread to test against
        return {"mean": mean, "sd": 0.0, "ci": [mean, mean], "p_value": 1.0 if mean == 0.0 else 0.0}
    half = float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / np.sqrt(n)
    p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return {"mean": mean, "sd": sd, "ci": [mean - half, mean + half], "p_value": p}


def paired_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with n pairs to detect a true mean difference delta."""
    if sd <= 0 or n < 2:
        return float("nan")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) * np.sqrt(n) / sd
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def min_detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest true gain the paired t-test detects with the given power (None if n < 2 or sd is 0)."""
    if sd is None or sd <= 0 or n < 2:
        return None
    upper = sd
    while paired_power(upper, sd, n, alpha) < power:
        upper *= 2
    return float(optimize.brentq(lambda d: paired_power(d, sd, n, alpha) - power, 0.0, upper, xtol=1e-10))


def subject_bootstrap(
    diff_per_take: np.ndarray, subjects: Sequence[str], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """Interval and two-sided p-value of the mean per-take difference, redrawing test subjects."""
    names, inverse = np.unique(np.asarray(subjects, dtype=str), return_inverse=True)
    sums = np.bincount(inverse, weights=diff_per_take, minlength=len(names))
    counts = np.bincount(inverse, minlength=len(names)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n_boot)
    boot = (draws @ sums) / (draws @ counts)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min((np.sum(boot <= 0) + 1) / (n_boot + 1), (np.sum(boot >= 0) + 1) / (n_boot + 1)))
    return {"ci": [float(lo), float(hi)], "p_value": float(p), "n_subjects": int(len(names))}


def _pairs(
    correct_base: Mapping[Hashable, np.ndarray], correct_cand: Mapping[Hashable, np.ndarray], n_takes: int
) -> tuple[list[Hashable], np.ndarray, np.ndarray]:
    """The two models' correctness, stacked per pair (same key = same features and seed)."""
    missing = set(correct_base) ^ set(correct_cand)
    if missing:
        raise ValueError(f"verdict: pairs present for one model only: {sorted(map(str, missing))}")
    keys = sorted(correct_base, key=str)
    if not keys:
        raise ValueError("verdict: no pairs to compare")
    base = np.array([np.asarray(correct_base[k], dtype=float) for k in keys])
    cand = np.array([np.asarray(correct_cand[k], dtype=float) for k in keys])
    if base.shape != (len(keys), n_takes) or cand.shape != base.shape:
        raise ValueError(f"verdict: every pair needs one correctness value per take ({n_takes} subjects given)")
    return keys, base, cand


def sentence(v: dict, what: str = "unseen-mode accuracy") -> str:
    """One plain sentence: the numbers and what the test found."""
    pts = lambda x: f"{100 * x:+.1f}"  # noqa: E731 - percentage points with sign
    b, c = v["baseline"], v["candidate"]
    head = (
        f"On {what}, {c} scored {v['cand_mean']:.3f} and {b} {v['base_mean']:.3f} over {v['n_pairs']} paired "
        f"seeds: a gain of {pts(v['gain'])} points"
    )
    if v["p_value"] is None:
        return head + "; with fewer than 2 pairs there is no test, so nothing can be concluded."
    lo, hi = v["ci95"]
    blo, bhi = v["boot_ci95"]
    head += (
        f" (95 % interval {pts(lo)} to {pts(hi)}, paired t-test p = {v['p_value']:.3g}; bootstrap over "
        f"{v['n_subjects']} test subjects {pts(blo)} to {pts(bhi)}, p = {v['boot_p_value']:.3g})"
    )
    mdd = (
        ""
        if v["mdd"] is None
        else (
            f" This design detects a true difference of {100 * v['mdd']:.1f} points "
            f"with {100 * v['power']:.0f} % power."
        )
    )
    if v["significant"] and v["gain"] > 0:
        return head + f": {c} is better than {b}, beyond both seed and subject chance." + mdd
    if v["significant"]:
        return head + f": {c} is worse than {b}, beyond both seed and subject chance." + mdd
    return head + f": the test found no difference between {c} and {b}." + mdd


def paired_verdict(
    correct_base: Mapping[Hashable, np.ndarray],
    correct_cand: Mapping[Hashable, np.ndarray],
    subjects: Sequence[str],
    *,
    baseline: str = "lstm",
    candidate: str = "mv_lstm",
    alpha: float = 0.05,
    power: float = 0.8,
    n_boot: int = 2000,
    boot_seed: int = 0,
    what: str = "unseen-mode accuracy",
) -> dict:
    """The full verdict, JSON-ready: per-pair gains, t-test, subject bootstrap, detectable difference, sentence.

    correct_*: pair key (seed, or (feature seed, seed)) -> 0/1 correctness per test take, same take
    order for every pair and both models; subjects: the subject of each take, same order.
    """
    keys, base, cand = _pairs(correct_base, correct_cand, len(subjects))
    per_pair = cand.mean(1) - base.mean(1)
    t = paired_t(per_pair, alpha)
    boot = subject_bootstrap((cand - base).mean(0), subjects, n_boot, boot_seed, alpha)
    mdd = min_detectable_difference(t["sd"], len(keys), alpha, power) if t["sd"] else None
    r4 = lambda x: None if x is None else round(float(x), 4)  # noqa: E731
    p3 = lambda x: None if x is None else float(f"{x:.3g}")  # noqa: E731 - p-values keep 3 significant digits
    significant = t["p_value"] is not None and t["p_value"] < alpha and boot["p_value"] < alpha
    v = {
        "baseline": baseline,
        "candidate": candidate,
        "n_pairs": len(keys),
        "n_takes": len(subjects),
        "n_subjects": boot["n_subjects"],
        "base_mean": r4(base.mean()),
        "cand_mean": r4(cand.mean()),
        "gain": r4(t["mean"]),
        "per_seed_gain": {str(k): r4(g) for k, g in zip(keys, per_pair)},
        "gain_sd": r4(t["sd"]),
        "ci95": None if t["ci"] is None else [r4(x) for x in t["ci"]],
        "p_value": p3(t["p_value"]),
        "boot_ci95": [r4(x) for x in boot["ci"]],
        "boot_p_value": p3(boot["p_value"]),
        "n_boot": n_boot,
        "alpha": alpha,
        "power": power,
        "mdd": r4(mdd),
        "significant": bool(significant),
        "claim_holds": bool(significant and t["mean"] > 0),
    }
    v["sentence"] = sentence(v, what)
    return v
