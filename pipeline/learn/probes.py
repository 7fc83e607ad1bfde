"""Linear probes: how much of a take's pose and illumination a model's final states still hold.

Why: the MV-LSTM rests on a premise, that an LSTM's output keeps the modes of variation (pose,
illumination) and that a mode cell can take them in instead. A probe measures it: a linear
classifier is fitted to read one mode factor (`split.mode_parts`: pose, illumination) from a
representation, and scored on test subjects it was not fitted on (cross-validation grouped by
subject, over the test takes of a fold, seen and unseen modes together so every factor has all its
values). The classifier is linear discriminant analysis on standardised inputs with Ledoit-Wolf
shrinkage: its one setting is computed in closed form from the fitting data, so nothing is tuned and
nothing is selected on test data (logistic regression, tried first, needed hundreds of solver
iterations a fit on these correlated inputs). Chance is the accuracy of always answering the fitting folds'
most common value, scored the same way.

Representations: `h_T` of every variant (what its expression head reads), `m_T` where the variant
has a mode cell, and `input`, the per-frame features averaged over the take (what the features
themselves carry, before any sequence model). A factor read from h_T well above chance is retained
by the expression features; the premise holds for the MV-LSTM when m_T holds more of it than h_T.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)

PROBE_FOLDS = 4  # grouped cross-validation folds over a fold's test subjects (fewer when it has fewer subjects)
MISSING = "unknown"  # a take whose factor is not known
INPUT = "input"  # the representation of the features alone (variant column: INPUT too)
COLUMNS = ["backend", "variant", "representation", "factor", "run", "fold", "accuracy", "chance", "n_takes"]


def factor_values(modes: Sequence[str], parts: list[str]) -> dict[str, np.ndarray]:
    """Factor name -> each take's value of it (the `/`-part of its mode that `split.mode_parts` names).

    A take whose mode is too short for the factor, or whose value the log left empty (`unknown`,
    `unknown_pose`: pipeline/modes.py), reads MISSING and is left out of that factor's probe, never
    probed as a value of its own.
    """
    split = [str(m).split("/") for m in modes]
    out = {}
    for i, factor in enumerate(parts):
        values = [p[i] if len(p) > i and not p[i].startswith("unknown") else MISSING for p in split]
        out[factor] = np.array(values, dtype=str)
    return out


def probe_score(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float] | None:
    """(accuracy, chance) of a linear read-out of `y` from `x`, on subjects held out of its fit; None when
    the data cannot say (one value only, `unknown` values aside, or fewer than two subjects)."""
    keep = y != MISSING
    x, y, groups = x[keep], y[keep], groups[keep]
    n_groups = len(set(groups.tolist()))
    if len(set(y.tolist())) < 2 or n_groups < 2:
        return None
    hits = chance = 0
    for fit, held in GroupKFold(n_splits=min(PROBE_FOLDS, n_groups)).split(x, y, groups):
        values, counts = np.unique(y[fit], return_counts=True)
        chance += int((y[held] == values[counts.argmax()]).sum())
        if len(values) < 2:  # the fitting subjects saw one value: the probe can only answer it
            hits += int((y[held] == values[0]).sum())
            continue
        clf = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
        clf.fit(x[fit], y[fit])
        hits += int((clf.predict(x[held]) == y[held]).sum())
    return hits / len(y), chance / len(y)


@torch.inference_mode()
def states(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, np.ndarray]:
    """`h_T` (and `m_T` where the variant has a mode cell) of each take, from the model in eval mode."""
    model.eval()
    h, m = model.encode(x, lengths)  # type: ignore[operator]
    out = {"h_T": h.cpu().numpy()}
    if m is not None:
        out["m_T"] = m.cpu().numpy()
    return out


def mean_input(x: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """Each take's per-frame features averaged over its valid steps (the `input` representation)."""
    mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).to(x.dtype)
    return ((x * mask[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)).numpy()


def probe_rows(
    reps: dict[str, np.ndarray], factors: dict[str, np.ndarray], subjects: np.ndarray, **key: Any
) -> list[dict[str, Any]]:
    """One row per representation x factor that can be probed; `key` names the model and run."""
    rows = []
    for rep, x in reps.items():
        for factor, y in factors.items():
            scored = probe_score(x, y, subjects)
            if scored is not None:
                rows.append(
                    {
                        **key,
                        "representation": rep,
                        "factor": factor,
                        "accuracy": scored[0],
                        "chance": scored[1],
                        "n_takes": int((y != MISSING).sum()),
                    }
                )
    return rows


def summarise_probes(rows: pd.DataFrame) -> dict[str, Any]:
    """backend -> variant -> representation -> factor -> mean and SD (ddof 1) over runs of the accuracy
    pooled over folds (weighted by takes), with chance pooled the same way."""
    out: dict[str, Any] = {}
    if rows.empty:
        return out
    w = rows.assign(_hits=rows["accuracy"] * rows["n_takes"], _chance=rows["chance"] * rows["n_takes"])
    keys = ["backend", "variant", "representation", "factor"]
    per_run = w.groupby([*keys, "run"], sort=False)[["_hits", "_chance", "n_takes"]].sum().reset_index()
    per_run["accuracy"] = per_run["_hits"] / per_run["n_takes"]
    per_run["chance"] = per_run["_chance"] / per_run["n_takes"]
    for (backend, variant, rep, factor), g in per_run.groupby(keys, sort=False):
        acc = g["accuracy"].to_numpy(dtype=float)
        out.setdefault(str(backend), {}).setdefault(str(variant), {}).setdefault(str(rep), {})[str(factor)] = {
            "accuracy_mean": round(float(acc.mean()), 4),
            "accuracy_sd": round(float(acc.std(ddof=1)), 4) if len(acc) > 1 else None,
            "chance": round(float(g["chance"].mean()), 4),
            "runs": int(len(acc)),
        }
    return out


def probes_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The summary flat, one row per probe (a DVC plot: accuracy per probe)."""
    rows = [
        {
            "backend": b,
            "variant": v,
            "representation": rep,
            "factor": factor,
            "probe": f"{b} {INPUT}: {factor}" if v == INPUT else f"{b} {v} {rep}: {factor}",
            **s,
        }
        for b, vs in summary.items()
        for v, reps in vs.items()
        for rep, fs in reps.items()
        for factor, s in fs.items()
    ]
    cols = ["backend", "variant", "representation", "factor", "probe", "accuracy_mean", "accuracy_sd", "chance", "runs"]
    return pd.DataFrame(rows, columns=cols)


def _figure(vs: dict[str, Any], variant: str, rep: str, factor: str) -> str | None:
    s = vs.get(variant, {}).get(rep, {}).get(factor)
    return None if s is None else f"{s['accuracy_mean']:.2f}"


def findings(summary: dict[str, Any], backend: str, baseline: str, candidate: str) -> list[str]:
    """Sentences on the premise for the primary pair, every figure read from `summary`."""
    out = []
    vs = summary.get(backend, {})
    for factor in dict.fromkeys(f for reps in vs.values() for fs in reps.values() for f in fs):
        chance = next((fs[factor]["chance"] for reps in vs.values() for fs in reps.values() if factor in fs), None)
        parts = [
            f"{label} {value}"
            for label, value in (
                ("the features", _figure(vs, INPUT, INPUT, factor)),
                (f"{baseline}'s h_T", _figure(vs, baseline, "h_T", factor)),
                (f"{candidate}'s h_T", _figure(vs, candidate, "h_T", factor)),
                (f"{candidate}'s m_T", _figure(vs, candidate, "m_T", factor)),
            )
            if value is not None
        ]
        if parts and chance is not None:
            out.append(f"{backend}: {factor} is read from " + ", ".join(parts) + f" (chance {chance:.2f}).")
    return out


def plot_probes(table: pd.DataFrame, out: Path, backend: str) -> None:
    """Probe accuracy per representation (rows) and factor (bars), chance marked, for one backend."""
    from pipeline.utils.plots import plt, save

    t = table[table["backend"] == backend]
    labels = list(dict.fromkeys(f"{v} {r}" if v != INPUT else INPUT for v, r in zip(t["variant"], t["representation"])))
    factors = list(dict.fromkeys(t["factor"]))
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.35 * max(len(labels), 1) * max(len(factors), 1)))
    height = 0.8 / max(len(factors), 1)
    for j, factor in enumerate(factors):
        g = t[t["factor"] == factor]
        ys, xs, errs, chances = [], [], [], []
        for _, r in g.iterrows():
            label = f"{r['variant']} {r['representation']}" if r["variant"] != INPUT else INPUT
            ys.append(len(labels) - 1 - labels.index(label) + (j - (len(factors) - 1) / 2) * height)
            xs.append(r["accuracy_mean"])
            errs.append(0.0 if pd.isna(r["accuracy_sd"]) else r["accuracy_sd"])
            chances.append(r["chance"])
        ax.barh(ys, xs, height=height, xerr=errs, label=factor, capsize=2)
        ax.scatter(chances, ys, marker="|", color="black", s=80, zorder=3)
    ax.set_yticks(range(len(labels) - 1, -1, -1), labels, fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probe accuracy on held-out subjects (mean +- SD over runs; | = chance)")
    ax.set_title(f"{backend}: what the representations hold of each mode factor", fontsize=9)
    if factors:
        ax.legend(fontsize=7, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no factor with two values to probe", transform=ax.transAxes, ha="center")
    save(fig, out)


def run_probes(
    items: Iterable[dict[str, Any]], parts: list[str], seen_inputs: set[tuple[Any, ...]] | None = None
) -> pd.DataFrame:
    """Rows for every fitted model: each item has backend, variant, run, fold, model, x, lengths, modes, subjects.

    `run` is the independent run (the feature extractor): sequence seeds sharing one are pooled by the
    summary, never counted as separate runs. The `input` probe is computed once per (backend, run,
    fold): it does not depend on the variant.
    """
    rows: list[dict[str, Any]] = []
    seen_inputs = set() if seen_inputs is None else seen_inputs  # shared by callers that stream the models
    for it in items:
        factors = factor_values(it["modes"], parts)
        key = {"backend": it["backend"], "run": it["run"], "fold": it["fold"]}
        ident = (it["backend"], it["run"], it["fold"])
        if ident not in seen_inputs:
            seen_inputs.add(ident)
            inputs = {INPUT: mean_input(it["x"], it["lengths"])}
            rows += probe_rows(inputs, factors, it["subjects"], variant=INPUT, **key)
        reps = states(it["model"], it["x"], it["lengths"])
        rows += probe_rows(reps, factors, it["subjects"], variant=it["variant"], **key)
    return pd.DataFrame(rows, columns=COLUMNS)
