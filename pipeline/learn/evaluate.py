"""The evaluate stage: seen vs unseen modes, per feature backend and model, with a paired test.

For each backend, variant and seed the predictions of the folds are pooled (each test subject is
predicted exactly once), giving one accuracy and one macro-F1 per seed on `test_seen` and on
`test_unseen`; the report gives their mean and std over seeds, the drop from seen to unseen, and
per-mode accuracy. The claim under test (MV-LSTM is more robust to unseen modes than an LSTM) is a
paired comparison at equal features and seed: `pipeline.learn.verdict.paired_verdict` gives the
gain with its interval, p-value and the design's minimum detectable difference. The report also
says how many takes the QA labels cost, and from which (prompted) classes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from pipeline import vocab
from pipeline.layout import Layout
from pipeline.learn.common import LearnInputError, feature_seed, load_features, load_split, read, reading
from pipeline.learn.train import checkpoint_path, predict, take_tensors
from pipeline.learn.verdict import paired_verdict
from pipeline.models.registry import PARAMS_KEY, VARIANTS, make_model, modes_needed
from pipeline.params import FeaturesParams, Params, TrainParams
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)
TESTS = vocab.MODE_TEST_SPLITS
BASELINE = "lstm"


def load_model(path: Path, p: TrainParams) -> torch.nn.Module:
    """A checkpoint of the train stage as an eval-mode model; a missing or damaged one is a one-line input error."""
    ckpt = read(path, "checkpoint", lambda f: torch.load(f, map_location="cpu", weights_only=False))
    with reading(path, "checkpoint"):
        model = make_model(
            ckpt["variant"],
            input_size=ckpt["input_size"],
            hidden=p.hidden,
            n_classes=ckpt["n_classes"],
            n_modes=modes_needed(ckpt["variant"], ckpt["mode_names"]),
            dropout=p.dropout,
            adversarial_weight=p.adversarial_weight,
        )
        model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def predictions(
    p: TrainParams, fp: FeaturesParams, split: dict[str, Any], features_root: Path, models_root: Path
) -> pd.DataFrame:
    """One row per (backend, variant, seed, test set, take): true and predicted class, probability, mode, subject."""
    rows = []
    dev = torch.device("cpu")
    for backend in fp.backends:
        for fold in split["folds"]:
            for seed in p.seeds:
                fs = feature_seed(seed, p.seeds, fp.seeds)
                data = load_features(fp.protocol, backend, fs, fold["fold"], features_root)
                index = {t: i for i, t in enumerate(data["take_ids"])}
                for variant in p.variants:
                    model = load_model(
                        checkpoint_path(fp.protocol, backend, variant, fold["fold"], seed, models_root), p
                    )
                    for test in TESTS:
                        ids = fold.get(test, [])
                        if not ids:
                            continue
                        x, lengths, y = take_tensors(data, ids, dev)
                        pred, conf = predict(model, x, lengths)
                        rows += [
                            {
                                "backend": backend,
                                "variant": variant,
                                "seed": seed,
                                "feature_seed": fs,
                                "fold": fold["fold"],
                                "test": test,
                                "take_id": t,
                                "subject_id": str(data["subjects"][index[t]]),
                                "mode": str(data["modes"][index[t]]),
                                "y": int(yy),
                                "pred": int(pp),
                                "confidence": float(cc),
                            }
                            for t, yy, pp, cc in zip(ids, y.numpy(), pred, conf)
                        ]
    return pd.DataFrame(rows)


def summarise(pred: pd.DataFrame, classes: list[str]) -> dict:
    """Metrics per variant: mean/std over seeds of pooled-fold accuracy and macro-F1, drops, per mode."""
    out = {}
    labels = list(range(len(classes)))
    for variant, g in pred.groupby("variant", sort=False):
        per_seed: dict[str, dict[str, list[float]]] = {test: {"accuracy": [], "macro_f1": []} for test in TESTS}
        for (_seed, test), h in g.groupby(["seed", "test"]):
            test = str(test)
            per_seed[test]["accuracy"].append(accuracy_score(h["y"], h["pred"]))
            per_seed[test]["macro_f1"].append(
                f1_score(h["y"], h["pred"], labels=labels, average="macro", zero_division=0)
            )
        m: dict[str, Any] = {}
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


def verdicts(pred: pd.DataFrame, baseline: str = BASELINE) -> dict:
    """Each other variant against the baseline on unseen modes: paired by (feature seed, seed), same takes."""
    unseen = pred[pred["test"] == "test_unseen"].sort_values("take_id")
    if unseen.empty or baseline not in set(unseen["variant"]):
        return {}

    def correct(variant: str) -> dict:
        g = unseen[unseen["variant"] == variant]
        return {
            (int(fs), int(s)): (h["y"] == h["pred"]).to_numpy()  # type: ignore[call-overload]  # (numbers)
            for (fs, s), h in g.groupby(["feature_seed", "seed"])
        }

    base = unseen[unseen["variant"] == baseline]
    first = base[base["seed"] == base["seed"].iloc[0]]
    out = {}
    for cand in dict.fromkeys(unseen["variant"]):
        if cand != baseline:
            out[f"{cand}_vs_{baseline}"] = paired_verdict(
                correct(baseline), correct(cand), list(first["subject_id"]), baseline=baseline, candidate=cand
            )
    return out


def guesses(pred: pd.DataFrame, metrics: dict, classes: list[str], variant: str = BASELINE) -> pd.DataFrame:
    """reports/predictions.csv for `annotate push --guesses`: one row per test take, from the baseline model
    on the backend with the best seen accuracy, majority vote over seeds, confidence = share of seeds agreeing
    times their mean probability."""
    best = max(metrics, key=lambda b: metrics[b].get(variant, {}).get("test_seen_accuracy_mean", -1.0))
    g = pred[(pred["backend"] == best) & (pred["variant"] == variant)]
    rows = []
    for take, h in g.groupby("take_id", sort=True):
        votes = h.groupby("pred")["confidence"].agg(["size", "sum"]).sort_index()
        top = int(
            votes.sort_values(["size", "sum"], ascending=False, kind="stable").index[0]
        )  # ties: the more confident
        agree = h[h["pred"] == top]
        conf = len(agree) / len(h) * float(agree["confidence"].mean())
        rows.append(
            {
                "take_id": take,
                "label": classes[top],
                "confidence": round(conf, 4),
                "model_version": f"{variant}-{best}-{h['seed'].nunique()}seeds",
            }
        )
    return pd.DataFrame(rows, columns=["take_id", "label", "confidence", "model_version"])


def qa_losses(labels: pd.DataFrame | None, manifest: pd.DataFrame | None) -> dict | None:
    """Takes accepted by ingest that have no accepted QA label, counted by prompted expression (None without both)."""
    if labels is None or manifest is None:
        return None
    accepted = manifest[manifest["status"] == "accepted"][["take_id", "prompted_expression"]]
    merged = accepted.merge(labels[["take_id", "status"]], on="take_id", how="left")
    lost = merged[merged["status"] != "accepted"]
    by_class = lost["prompted_expression"].value_counts().sort_index()
    total = accepted["prompted_expression"].value_counts()
    return {
        "takes_with_ingest_accepted": len(accepted),
        "takes_without_accepted_label": len(lost),
        "lost_by_prompted_expression": {c: int(n) for c, n in by_class.items()},
        "lost_share_by_prompted_expression": {
            c: round(int(n) / int(total[c]), 4)  # type: ignore[call-overload]  # (a class name)
            for c, n in by_class.items()
        },
    }


def _plot_confusions(pred: pd.DataFrame, classes: list[str], out: Path) -> None:
    from pipeline.utils.plots import plt, save

    keys = list(dict.fromkeys(zip(pred["backend"], pred["variant"])))
    fig, axes = plt.subplots(len(TESTS), len(keys), figsize=(3.2 * len(keys), 7), squeeze=False)
    for j, (b, v) in enumerate(keys):
        for i, test in enumerate(TESTS):
            h = pred[(pred["backend"] == b) & (pred["variant"] == v) & (pred["test"] == test)]
            cm = confusion_matrix(h["y"], h["pred"], labels=range(len(classes)), normalize="true")
            ax = axes[i][j]
            ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
            ax.set_title(f"{b}/{v}: {test}", fontsize=8)
            ax.set_xticks(range(len(classes)), [c[:4] for c in classes], fontsize=7, rotation=90)
            ax.set_yticks(range(len(classes)), [c[:4] for c in classes], fontsize=7)
            for (a, c), val in np.ndenumerate(cm):
                ax.text(
                    c, a, f"{val:.2f}", ha="center", va="center", fontsize=5, color="white" if val > 0.5 else "black"
                )
    save(fig, out)


def _plot_curves(curves: pd.DataFrame, out: Path) -> None:
    from pipeline.utils.plots import plt, save

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for (b, v), g in curves.groupby(["backend", "variant"], sort=False):
        mean = g.groupby("epoch")[["train_loss", "val_acc"]].mean()
        ax[0].plot(mean.index, mean["train_loss"], label=f"{b}/{v}")
        ax[1].plot(mean.index, mean["val_acc"], label=f"{b}/{v}")
    ax[0].set_title("training loss (mean over folds and seeds)")
    ax[1].set_title("validation accuracy")
    for a in ax:
        a.set_xlabel("epoch")
        a.legend(fontsize=6)
    save(fig, out)


def _optional_table(path: Path) -> pd.DataFrame | None:
    return read(path, "table", pd.read_parquet) if path.exists() else None


def evaluate(
    p: TrainParams,
    fp: FeaturesParams,
    split: dict[str, Any],
    pred: pd.DataFrame,
    labels: pd.DataFrame | None,
    manifest: pd.DataFrame | None,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The report, the guesses for `annotate push --guesses` and the named confusion rows, from the predictions."""
    classes = split["classes"]
    backends = list(dict.fromkeys(pred["backend"]))
    metrics = {b: summarise(pred[pred["backend"] == b], classes) for b in backends}
    report = {
        "protocol": fp.protocol,
        "labels": split.get("labels"),
        "classes": classes,
        "seeds": list(p.seeds),
        "feature_seeds": list(fp.seeds),
        "backends": metrics,
        "verdicts": {b: verdicts(pred[pred["backend"] == b]) for b in backends},
        "qa_label_losses": qa_losses(labels, manifest),
    }
    named = pred.assign(actual=[classes[i] for i in pred["y"]], predicted=[classes[i] for i in pred["pred"]])
    confusion = named[["backend", "variant", "seed", "test", "mode", "take_id", "actual", "predicted"]]
    return report, guesses(pred, metrics, classes), confusion


def run(layout: Layout, params: Params) -> None:
    """Stage `evaluate`: models, features, splits (labels and manifest when present) in; metrics, guesses, plots out."""
    p, fp = params.train, params.features
    VARIANTS.check(p.variants, PARAMS_KEY)
    split = load_split(fp.protocol, layout.splits)
    classes = split["classes"]
    pred = predictions(p, fp, split, layout.features, layout.models)
    if pred.empty:
        raise LearnInputError(
            f"{layout.splits / (fp.protocol + '.json')}: no fold has a test_seen or test_unseen take to evaluate"
        )
    report, guessed, confusion = evaluate(
        p, fp, split, pred, _optional_table(layout.labels), _optional_table(layout.manifest)
    )
    io.write_csv(layout.predictions, guessed)
    io.write_csv(layout.confusion, confusion)
    _plot_confusions(pred, classes, layout.confusion_plot)
    if layout.learning_curves.exists():
        _plot_curves(read(layout.learning_curves, "learning curves", pd.read_csv), layout.learning_curves_plot)
    # the metric report last: when it exists, every other output of the stage does
    io.write_json(
        layout.metrics,
        with_provenance(report, params, "features.protocol", "features.backends", "features.seeds", "train"),
    )
    for b, ms in report["backends"].items():
        for v, m in ms.items():
            log.info(
                "%-9s %-12s seen %.3f +- %.3f   unseen %.3f +- %.3f   drop %.3f",
                b,
                v,
                m["test_seen_accuracy_mean"],
                m["test_seen_accuracy_std"],
                m["test_unseen_accuracy_mean"],
                m["test_unseen_accuracy_std"],
                m.get("drop_accuracy_mean", float("nan")),
            )
        for name, v in report["verdicts"][b].items():
            log.info("%s %s: %s", b, name, v.get("sentence", ""))


if __name__ == "__main__":
    raise SystemExit(main(run))
