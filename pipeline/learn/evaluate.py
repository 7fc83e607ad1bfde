"""The evaluate stage: seen vs unseen modes, per model, mean and std over seeds.

For each variant and seed, the predictions of the folds are pooled (each test subject is predicted
exactly once), giving one accuracy and one macro-F1 per seed on `test_seen` and on `test_unseen`;
the report gives their mean and std over seeds, the drop from seen to unseen, and per-mode
accuracy. The claim under test: MV-LSTM's unseen-mode accuracy beats the LSTM's by more than the
seed spread.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from pipeline import paths, vocab
from pipeline.learn.common import load_features, load_split
from pipeline.learn.train import take_tensors, checkpoint_path, predict
from pipeline.models import make_model
from pipeline.params import TrainParams
from pipeline.utils import io

log = logging.getLogger(__name__)
TESTS = vocab.MODE_TEST_SPLITS


def load_model(path: Path, p: TrainParams) -> torch.nn.Module:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = make_model(ckpt["variant"], input_size=ckpt["input_size"], hidden=p.hidden, n_classes=ckpt["n_classes"],
                       n_modes=len(ckpt["mode_names"]) if ckpt["variant"] == "mv_lstm_sup" else 0,
                       dropout=p.dropout, adversarial_weight=p.adversarial_weight)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def predictions(p: TrainParams, protocol: str, split_dir: Path = paths.SPLITS, features_root: Path = paths.FEATURES,
                models_root: Path = paths.MODELS) -> pd.DataFrame:
    """One row per (variant, seed, test set, take): true and predicted class, mode."""
    split = load_split(protocol, split_dir)
    rows = []
    dev = torch.device("cpu")
    for fold in split["folds"]:
        data = load_features(protocol, fold["fold"], features_root)
        index = {t: i for i, t in enumerate(data["take_ids"])}
        for variant in p.variants:
            for seed in p.seeds:
                model = load_model(checkpoint_path(protocol, variant, fold["fold"], seed, models_root), p)
                for test in TESTS:
                    ids = fold.get(test, [])
                    if not ids:
                        continue
                    x, lengths, y = take_tensors(data, ids, dev)
                    pred, _ = predict(model, x, lengths)
                    rows += [{"variant": variant, "seed": seed, "fold": fold["fold"], "test": test, "take_id": t,
                              "mode": str(data["modes"][index[t]]), "y": int(yy), "pred": int(pp)}
                             for t, yy, pp in zip(ids, y.numpy(), pred)]
    return pd.DataFrame(rows)


def summarise(pred: pd.DataFrame, classes: list[str]) -> dict:
    """Metrics per variant: mean/std over seeds of pooled-fold accuracy and macro-F1, drops, per mode."""
    out = {}
    labels = list(range(len(classes)))
    for variant, g in pred.groupby("variant", sort=False):
        per_seed = {test: {"accuracy": [], "macro_f1": []} for test in TESTS}
        for (seed, test), h in g.groupby(["seed", "test"]):
            per_seed[test]["accuracy"].append(accuracy_score(h["y"], h["pred"]))
            per_seed[test]["macro_f1"].append(f1_score(h["y"], h["pred"], labels=labels, average="macro", zero_division=0))
        m = {}
        for test in TESTS:
            for metric, vals in per_seed[test].items():
                if vals:
                    m[f"{test}_{metric}_mean"] = round(float(np.mean(vals)), 4)
                    m[f"{test}_{metric}_std"] = round(float(np.std(vals)), 4)
        if "test_seen_accuracy_mean" in m and "test_unseen_accuracy_mean" in m:
            drops = np.array(per_seed["test_seen"]["accuracy"]) - np.array(per_seed["test_unseen"]["accuracy"])
            m["drop_accuracy_mean"] = round(float(drops.mean()), 4)
            m["drop_accuracy_std"] = round(float(drops.std()), 4)
        m["per_mode_accuracy"] = {mode: round(float((h["y"] == h["pred"]).mean()), 4) for mode, h in g.groupby("mode")}
        m["seeds"] = int(g["seed"].nunique())
        out[variant] = m
    return out


def verdict(metrics: dict, baseline: str = "lstm", candidate: str = "mv_lstm") -> dict:
    """Does the candidate beat the baseline on unseen modes by more than the seed spread?"""
    if baseline not in metrics or candidate not in metrics:
        return {"tested": False}
    b, c = metrics[baseline], metrics[candidate]
    gain = c["test_unseen_accuracy_mean"] - b["test_unseen_accuracy_mean"]
    spread = max(c["test_unseen_accuracy_std"], b["test_unseen_accuracy_std"])
    return {"tested": True, "baseline": baseline, "candidate": candidate, "unseen_gain": round(gain, 4),
            "seed_spread": round(spread, 4), "claim_holds": bool(gain > spread)}


def _plot_confusions(pred: pd.DataFrame, classes: list[str], out: Path) -> None:
    from pipeline.utils.plots import plt, save

    variants = list(dict.fromkeys(pred["variant"]))
    fig, axes = plt.subplots(len(TESTS), len(variants), figsize=(3.6 * len(variants), 7), squeeze=False)
    for j, v in enumerate(variants):
        for i, test in enumerate(TESTS):
            h = pred[(pred["variant"] == v) & (pred["test"] == test)]
            cm = confusion_matrix(h["y"], h["pred"], labels=range(len(classes)), normalize="true")
            ax = axes[i][j]
            ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
            ax.set_title(f"{v}: {test}", fontsize=9)
            ax.set_xticks(range(len(classes)), [c[:4] for c in classes], fontsize=7, rotation=90)
            ax.set_yticks(range(len(classes)), [c[:4] for c in classes], fontsize=7)
            for (a, b), val in np.ndenumerate(cm):
                ax.text(b, a, f"{val:.2f}", ha="center", va="center", fontsize=6, color="white" if val > 0.5 else "black")
    save(fig, out)


def _plot_curves(curves: pd.DataFrame, out: Path) -> None:
    from pipeline.utils.plots import plt, save

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for v, g in curves.groupby("variant", sort=False):
        mean = g.groupby("epoch")[["train_loss", "val_acc"]].mean()
        ax[0].plot(mean.index, mean["train_loss"], label=v)
        ax[1].plot(mean.index, mean["val_acc"], label=v)
    ax[0].set_title("training loss (mean over folds and seeds)")
    ax[1].set_title("validation accuracy")
    for a in ax:
        a.set_xlabel("epoch")
        a.legend()
    save(fig, out)


def run(p: TrainParams, protocol: str, split_dir: Path = paths.SPLITS, features_root: Path = paths.FEATURES,
        models_root: Path = paths.MODELS, metrics_path: Path = paths.METRICS, plots: Path = paths.PLOTS) -> dict:
    split = load_split(protocol, split_dir)
    classes = split["classes"]
    pred = predictions(p, protocol, split_dir, features_root, models_root)
    metrics = summarise(pred, classes)
    report = {"protocol": protocol, "labels": split.get("labels"), "classes": classes, "models": metrics,
              "mv_lstm_vs_lstm": verdict(metrics), "mv_lstm_sup_vs_lstm": verdict(metrics, candidate="mv_lstm_sup")}
    io.write_json(metrics_path, report)
    named = pred.assign(actual=[classes[i] for i in pred["y"]], predicted=[classes[i] for i in pred["pred"]])
    io.write_csv(plots / "confusion.csv", named[["variant", "seed", "test", "mode", "take_id", "actual", "predicted"]])
    _plot_confusions(pred, classes, plots / "confusion.png")
    curves = plots / "learning_curves.csv"
    if curves.exists():
        _plot_curves(pd.read_csv(curves), plots / "learning_curves.png")
    for v, m in metrics.items():
        log.info("%-12s seen %.3f +- %.3f   unseen %.3f +- %.3f   drop %.3f", v, m["test_seen_accuracy_mean"], m["test_seen_accuracy_std"],
                 m["test_unseen_accuracy_mean"], m["test_unseen_accuracy_std"], m.get("drop_accuracy_mean", float("nan")))
    return report
