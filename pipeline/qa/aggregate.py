"""Label aggregation: majority vote and Dawid-Skene EM, with a confidence per item, plus the
annotator figures that fall out of Dawid-Skene (confusion matrices, spammer score)."""

from __future__ import annotations

import numpy as np


def vote_counts(
    items: np.ndarray, annotators: np.ndarray, labels: np.ndarray, n_items: int, n_ann: int, K: int
) -> np.ndarray:
    """n_ann x n_items x K one-hot tensor of who said what."""
    counts = np.zeros((n_ann, n_items, K))
    np.add.at(counts, (annotators, items, labels), 1)
    return counts


def majority_vote(counts: np.ndarray, rng_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(label, share of votes) per item; ties broken at random but reproducibly."""
    votes = counts.sum(axis=0)
    rng = np.random.default_rng(rng_seed)
    noisy = votes + rng.uniform(0, 1e-6, votes.shape)
    label = noisy.argmax(axis=1)
    total = votes.sum(axis=1)
    share = np.where(total > 0, votes[np.arange(len(votes)), label] / np.maximum(total, 1), 0.0)
    return label, share


def dawid_skene(
    counts: np.ndarray, max_iter: int = 100, tol: float = 1e-6, smoothing: float = 0.01
) -> dict[str, np.ndarray]:
    """Dawid & Skene (1979) EM: item posteriors, class priors, per-annotator confusion matrices.

    counts: annotators x items x K. Initialised from the vote shares; the confusion rows are
    smoothed so an annotator who never saw a class does not get a zero probability.
    """
    votes = counts.sum(axis=0)
    T = votes / np.maximum(votes.sum(axis=1, keepdims=True), 1e-12)
    prev = None
    for it in range(max_iter):  # noqa: B007 - `it` is reported after the loop
        # no item yet (nobody has annotated): a flat prior, not the mean of nothing
        prior = (T.mean(axis=0) if len(T) else np.full(T.shape[1], 1.0 / max(T.shape[1], 1))) + 1e-12
        conf = np.einsum("ik,jil->jkl", T, counts) + smoothing
        conf /= conf.sum(axis=2, keepdims=True)
        log_post = np.log(prior)[None, :] + np.einsum("jil,jkl->ik", counts, np.log(conf))
        log_post -= log_post.max(axis=1, keepdims=True)
        T = np.exp(log_post)
        T /= T.sum(axis=1, keepdims=True)
        ll = float(log_post.sum())
        if prev is not None and abs(ll - prev) < tol:
            break
        prev = ll
    return {"posterior": T, "prior": prior / prior.sum(), "confusion": conf, "iterations": np.array(it + 1)}


def spammer_score(confusion: np.ndarray, support: np.ndarray | None = None) -> float:
    """Raykar & Yu (2012): 0 when every true class gets the same label distribution (a spammer),
    1 for a perfect annotator. Mean squared difference between rows of the confusion matrix,
    over the classes that occur (`support`): rows of absent classes are only smoothing."""
    rows = np.flatnonzero(support) if support is not None else np.arange(confusion.shape[0])
    diffs = [((confusion[c] - confusion[d]) ** 2).sum() for i, c in enumerate(rows) for d in rows[i + 1 :]]
    return float(np.mean(diffs) / 2) if diffs else float("nan")


def top_confusion(confusion: np.ndarray, support: np.ndarray | None = None) -> tuple[int, int, float]:
    """(true class, given label, rate) of an annotator's largest off-diagonal confusion among
    the classes that occur."""
    off = confusion.copy()
    np.fill_diagonal(off, -1)
    if support is not None:
        off[~support] = -1
    c, k = np.unravel_index(np.argmax(off), off.shape)
    return int(c), int(k), float(off[c, k])
