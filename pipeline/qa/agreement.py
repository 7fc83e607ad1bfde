"""Inter-annotator agreement on nominal labels. Pure NumPy; checked against the reference
packages (`krippendorff`, `statsmodels`, `scikit-learn`) in the tests.

Ratings come as a long table of (item, annotator, label) with labels as integer codes 0..K-1.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd


def reliability_matrix(ratings: pd.DataFrame, n_classes: int) -> np.ndarray:
    """annotators x items matrix of label codes, NaN where an annotator did not rate an item."""
    wide = ratings.pivot_table(index="annotator", columns="item", values="label", aggfunc="first")
    return wide.to_numpy(dtype=float)


def krippendorff_alpha_nominal(data: np.ndarray) -> float:
    """Krippendorff's alpha for nominal data (coders x units, NaN = missing).

    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k, with the coincidence matrix
    o over units that have at least two values.
    """
    values = np.unique(data[~np.isnan(data)])
    index = {v: i for i, v in enumerate(values)}
    K = len(values)
    o = np.zeros((K, K))
    for unit in data.T:
        vals = unit[~np.isnan(unit)]
        m = len(vals)
        if m < 2:
            continue
        counts = np.zeros(K)
        for v in vals:
            counts[index[v]] += 1
        o += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return float("nan")
    disagree_obs = o.sum() - np.trace(o)
    disagree_exp = (n_c.sum() ** 2 - (n_c**2).sum()) / (n - 1)
    if disagree_exp == 0:
        return 1.0 if disagree_obs == 0 else float("nan")
    return float(1 - disagree_obs / disagree_exp)


def per_class_alpha(data: np.ndarray, n_classes: int) -> dict[int, float]:
    """Alpha of 'class c' vs 'anything else' per class: where agreement breaks down."""
    out = {}
    for c in range(n_classes):
        if not (data == c).any():
            out[c] = float("nan")  # nobody used the class: its agreement is undefined, not perfect
            continue
        binary = np.where(np.isnan(data), np.nan, (data == c).astype(float))
        out[c] = krippendorff_alpha_nominal(binary)
    return out


def category_counts(data: np.ndarray, n_classes: int) -> np.ndarray:
    """items x classes table of how many annotators chose each class."""
    table = np.zeros((data.shape[1], n_classes))
    for j, unit in enumerate(data.T):
        for v in unit[~np.isnan(unit)]:
            table[j, int(v)] += 1
    return table


def fleiss_kappa(table: np.ndarray) -> float:
    """Fleiss' kappa for an items x classes count table with the same number of raters per item."""
    n = table.sum(axis=1)
    if len(table) == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every item")
    r = n[0]
    p_j = table.sum(axis=0) / table.sum()
    P_i = ((table**2).sum(axis=1) - r) / (r * (r - 1))
    P_bar, P_e = P_i.mean(), (p_j**2).sum()
    return float((P_bar - P_e) / (1 - P_e)) if P_e < 1 else float("nan")


def fleiss_on_complete_items(data: np.ndarray, n_classes: int) -> tuple[float, int, int]:
    """Fleiss' kappa over the items rated by the most common number of annotators.

    Returns (kappa, items used, raters per item): cancelled or missing ratings make the design
    unbalanced, and Fleiss' kappa is defined for a fixed number of raters.
    """
    table = category_counts(data, n_classes)
    n = table.sum(axis=1).astype(int)
    n = n[n >= 2]
    if not len(n):
        return float("nan"), 0, 0
    r = int(np.bincount(n).argmax())
    sub = table[table.sum(axis=1) == r]
    return fleiss_kappa(sub), len(sub), r


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two annotators over the items both rated."""
    labels = np.union1d(a, b)
    idx = {v: i for i, v in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)))
    for x, y in zip(a, b):
        cm[idx[x], idx[y]] += 1
    n = cm.sum()
    po = np.trace(cm) / n
    pe = (cm.sum(0) * cm.sum(1)).sum() / n**2
    return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")


def pairwise_cohen(data: np.ndarray, annotators: list[str], min_common: int = 5) -> dict[str, dict]:
    """Cohen's kappa for every annotator pair with at least `min_common` items in common."""
    out = {}
    for i, j in combinations(range(len(annotators)), 2):
        both = ~np.isnan(data[i]) & ~np.isnan(data[j])
        if both.sum() >= min_common:
            out[f"{annotators[i]}|{annotators[j]}"] = {
                "kappa": round(cohen_kappa(data[i, both], data[j, both]), 4),
                "items": int(both.sum()),
            }
    return out
