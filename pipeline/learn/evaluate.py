"""The evaluate stage: per protocol, feature backend and model, the pre-registered primary test and the rest.

For each backend, variant and seed the predictions of the folds are pooled, giving one accuracy and
one macro-F1 per seed on each test set the protocol has (`test_seen` and `test_unseen`, or `test`);
the report gives their mean and sample SD (ddof 1) over seeds, the drop from seen to unseen, and
per-mode accuracy; per skin tone and against the simulator's truth where those exist.

Inference (`pipeline.learn.stats`): one primary test, declared in params.yaml `experiment.primary`
before any result is seen (protocol, backend, candidate vs baseline, endpoint: the drop interaction,
i.e. the candidate's gain on unseen modes minus its gain on seen modes). Its interval and p come from
a joint bootstrap over test subjects and independent training runs (a run is one feature-extractor
seed: seeds sharing an extractor are averaged into one run). Every other comparison is secondary,
Holm-corrected over its family and worded as such. The older per-seed `verdicts` stay for reference.
Variant names come from the predictions, never from a fixed list.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from pipeline import vocab
from pipeline.layout import Layout
from pipeline.learn import probes
from pipeline.learn.common import LearnInputError, feature_seed, load_features, load_split, read, reading
from pipeline.learn.stats import holm, joint_bootstrap, mean_sd
from pipeline.learn.train import checkpoint_path, predict, take_tensors
from pipeline.learn.verdict import paired_verdict
from pipeline.models.registry import PARAMS_KEY, VARIANTS, make_model, modes_needed
from pipeline.params import ExperimentParams, FeaturesParams, Params, TrainParams
from pipeline.stage import main, with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)
TESTS = vocab.TEST_SPLITS  # test (subject folds, official sets), test_seen and test_unseen (mode protocols)
BASELINE = "lstm"
ENDPOINTS: dict[str, dict[str, float]] = {
    "drop_interaction": {vocab.TEST_UNSEEN: 1.0, vocab.TEST_SEEN: -1.0},  # gain on unseen minus gain on seen
    "unseen_gain": {vocab.TEST_UNSEEN: 1.0},
    "test_gain": {vocab.TEST: 1.0},
}


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


def fitted(
    p: TrainParams, fp: FeaturesParams, split: dict[str, Any], features_root: Path, models_root: Path
) -> Iterator[dict[str, Any]]:
    """Every trained model of the protocol with the features it reads (backend, fold, seed, variant, model, data)."""
    for backend in fp.backends:
        for fold in split["folds"]:
            for seed in p.seeds:
                fs = feature_seed(seed, p.seeds, fp.seeds)
                data = load_features(fp.protocol, backend, fs, fold["fold"], features_root)
                for variant in p.variants:
                    path = checkpoint_path(fp.protocol, backend, variant, fold["fold"], seed, models_root)
                    yield {
                        "backend": backend,
                        "fold": fold,
                        "seed": seed,
                        "run": p.seeds.index(seed),
                        "feature_seed": fs,
                        "variant": variant,
                        "model": load_model(path, p),
                        "data": data,
                    }


def predictions(models: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (backend, variant, seed, test set, take): true and predicted class, probability, mode, subject."""
    rows = []
    dev = torch.device("cpu")
    for it in models:
        fold, data = it["fold"], it["data"]
        index = {t: i for i, t in enumerate(data["take_ids"])}
        for test in TESTS:
            ids = fold.get(test, [])
            if not ids:
                continue
            x, lengths, y = take_tensors(data, ids, dev)
            pred, conf = predict(it["model"], x, lengths)
            rows += [
                {
                    "backend": it["backend"],
                    "variant": it["variant"],
                    "seed": it["seed"],
                    "run": it["run"],
                    "feature_seed": it["feature_seed"],
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


def probe_items(models: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each model with the test takes of its fold (every test set together) as `pipeline.learn.probes` reads them."""
    for it in models:
        fold, data = it["fold"], it["data"]
        ids = [t for test in TESTS for t in fold.get(test, [])]
        if not ids:
            continue
        index = {t: i for i, t in enumerate(data["take_ids"])}
        rows = [index[t] for t in ids]
        x, lengths, _ = take_tensors(data, ids, torch.device("cpu"))
        yield {
            "backend": it["backend"],
            "variant": it["variant"],
            "run": it["feature_seed"],  # the independent run: seeds sharing an extractor are one run
            "fold": fold["fold"],
            "model": it["model"],
            "x": x,
            "lengths": lengths,
            "modes": [str(m) for m in data["modes"][rows]],
            "subjects": np.array([str(s) for s in data["subjects"][rows]]),
        }


def summarise(pred: pd.DataFrame, classes: list[str]) -> dict:
    """Metrics per variant: mean/SD (ddof 1) over seeds of pooled-fold accuracy and macro-F1, drops, per mode."""
    out = {}
    labels = list(range(len(classes)))
    tests = [t for t in TESTS if t in set(pred["test"])]
    for variant, g in pred.groupby("variant", sort=False):
        per_seed: dict[str, dict[str, list[float]]] = {test: {"accuracy": [], "macro_f1": []} for test in tests}
        for (_seed, test), h in g.groupby(["seed", "test"]):
            test = str(test)
            per_seed[test]["accuracy"].append(accuracy_score(h["y"], h["pred"]))
            per_seed[test]["macro_f1"].append(
                f1_score(h["y"], h["pred"], labels=labels, average="macro", zero_division=0)
            )
        m: dict[str, Any] = {}
        for test in tests:
            for metric, vals in per_seed[test].items():
                mean, sd = mean_sd(vals)
                if mean is not None:
                    m[f"{test}_{metric}_mean"] = round(mean, 4)
                    m[f"{test}_{metric}_std"] = None if sd is None else round(sd, 4)
        if "test_seen_accuracy_mean" in m and "test_unseen_accuracy_mean" in m:
            drops = np.array(per_seed["test_seen"]["accuracy"]) - np.array(per_seed["test_unseen"]["accuracy"])
            mean, sd = mean_sd(list(drops))
            m["drop_accuracy_mean"] = None if mean is None else round(mean, 4)
            m["drop_accuracy_std"] = None if sd is None else round(sd, 4)
        m["per_mode_accuracy"] = {mode: round(float((h["y"] == h["pred"]).mean()), 4) for mode, h in g.groupby("mode")}
        m["seeds"] = int(g["seed"].nunique())
        m["independent_runs"] = int(g["feature_seed"].nunique())  # seeds sharing an extractor are one run
        out[str(variant)] = m
    return out


def paired_differences(pred: pd.DataFrame, backend: str, baseline: str, candidate: str) -> pd.DataFrame:
    """Candidate minus baseline correctness per (independent run, fold, test set, take), seeds of a run averaged.

    A run is one feature-extractor seed: sequence-model seeds that share it are not independent replicates,
    so they are averaged into one. A prediction of one model without its pair is a one-line input error.
    """
    keys = ["feature_seed", "seed", "fold", "test", "take_id"]
    sel = pred[pred["backend"] == backend]
    base, cand = (sel[sel["variant"] == v] for v in (baseline, candidate))
    for v, g in ((baseline, base), (candidate, cand)):
        if g.empty:
            known = ", ".join(sorted(set(sel["variant"]))) or "none"
            raise LearnInputError(f"no predictions of {v} on features {backend} (predicted: {known})")
    m = base.merge(cand, on=keys, suffixes=("_b", "_c"), how="outer", indicator=True)
    unpaired = m[m["_merge"] != "both"]
    if len(unpaired):
        r = unpaired.iloc[0]
        who = baseline if r["_merge"] == "left_only" else candidate
        raise LearnInputError(
            f"{len(unpaired)} prediction(s) of {who} on features {backend} have no pair in the other model "
            f"(first: take {r['take_id']}, seed {r['seed']}, fold {r['fold']}): rerun train and evaluate"
        )
    m["diff"] = (m["y_c"] == m["pred_c"]).astype(float) - (m["y_b"] == m["pred_b"]).astype(float)
    m = m.rename(columns={"subject_id_b": "subject_id"})
    return m.groupby(["feature_seed", "fold", "test", "take_id", "subject_id"], as_index=False).agg(
        diff=("diff", "mean")
    )


def _sentence(c: dict, primary: bool, family: int = 1) -> str:
    """One plain sentence: what was compared, the number, the interval, and what it means (worded by rank)."""
    pts = lambda x: f"{100 * x:+.1f}"  # noqa: E731 - percentage points with sign
    b = c["baseline"]
    what = {
        "drop_interaction": f"gain over {b} on unseen modes minus its gain on seen modes",
        "unseen_gain": f"gain over {b} in accuracy on unseen modes",
        "test_gain": f"gain over {b} in accuracy on the test subjects",
    }[c["endpoint"]]
    rank = "Primary (pre-registered)" if primary else "Secondary"
    head = (
        f"{rank} test on {c['protocol']}, features {c['backend']}: {c['candidate']}'s {what} is "
        f"{pts(c['estimate'])} points"
    )
    if c["p_value"] is None:
        return head + f" ({c['n_subjects']} test subject(s), {c['n_runs']} run(s)): not testable: {c['reason']}."
    lo, hi = c["ci95"]
    head += (
        f" (95 % interval {pts(lo)} to {pts(hi)}; joint bootstrap over {c['n_subjects']} test subjects and "
        f"{c['n_runs']} independent run(s), p = {c['p_value']:.3g}"
    )
    head += "" if primary else f", Holm-corrected over {family} secondary comparisons p = {c['p_holm']:.3g}"
    head += ")"
    if c["n_runs"] < 2:
        head += "; with one independent run the interval omits training noise"
    if not c["significant"]:
        return head + ": no difference was detected."
    better = c["estimate"] > 0
    if c["endpoint"] == "drop_interaction":
        verdict = (
            f"{c['candidate']} loses less than {c['baseline']} on unseen modes"
            if better
            else f"{c['candidate']} loses more than {c['baseline']} on unseen modes"
        )
    else:
        verdict = f"{c['candidate']} is {'more' if better else 'less'} accurate than {c['baseline']}"
    return head + f": {verdict}" + ("." if primary else " (secondary: read as exploratory).")


def comparisons(pred: pd.DataFrame, e: ExperimentParams, protocol: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The primary test (or why it did not run here) and every secondary comparison, Holm-corrected.

    Secondary: each backend x each variant other than the primary baseline x each endpoint the protocol
    has (drop interaction and unseen gain with seen/unseen test sets; test gain with one test set).
    """
    pr = e.primary
    tests = set(pred["test"])
    endpoints = [k for k, c in ENDPOINTS.items() if set(c) <= tests]
    variants = list(dict.fromkeys(pred["variant"]))
    baseline = pr.baseline if pr.baseline in variants else variants[0]
    results: dict[str, dict[str, Any]] = {}
    raw_p: dict[str, float | None] = {}  # unrounded: decisions and Holm use these, the report shows 3 digits
    for backend in dict.fromkeys(pred["backend"]):
        for cand in variants:
            if cand == baseline:
                continue
            diffs = paired_differences(pred, str(backend), baseline, cand)
            for endpoint in endpoints:
                r = joint_bootstrap(
                    diffs["diff"].to_numpy(),
                    diffs["feature_seed"].to_numpy(),
                    diffs["subject_id"].to_numpy(),
                    diffs["test"].to_numpy(),
                    ENDPOINTS[endpoint],
                    n_boot=e.n_boot,
                    seed=e.boot_seed,
                    alpha=e.alpha,
                )
                name = f"{backend}/{cand}_vs_{baseline}/{endpoint}"
                raw_p[name] = r["p_value"]
                results[name] = {
                    "protocol": protocol,
                    "backend": str(backend),
                    "candidate": cand,
                    "baseline": baseline,
                    "endpoint": endpoint,
                    **_rounded(r),
                }
    key = f"{pr.backend}/{pr.candidate}_vs_{pr.baseline}/{pr.endpoint}"
    declared = pr.model_dump()
    if protocol != pr.protocol:
        primary: dict[str, Any] = {
            "declared": declared,
            "status": "not run",
            "reason": f"declared on protocol {pr.protocol}; this evaluation is of {protocol} (features.protocol)",
        }
    elif key not in results:
        raise LearnInputError(
            f"experiment.primary: no {pr.candidate} vs {pr.baseline} {pr.endpoint} on features {pr.backend} in "
            f"these predictions (backends: {', '.join(dict.fromkeys(pred['backend']))}; variants: "
            f"{', '.join(variants)}; test sets: {', '.join(sorted(tests))}): train the declared pair"
        )
    else:
        c = results.pop(key)
        p_raw = raw_p.pop(key)
        c["significant"] = bool(p_raw is not None and p_raw < e.alpha)
        primary = {"declared": declared, "status": "run", **c, "sentence": _sentence(c, True)}
    adjusted = holm({k: raw_p[k] for k in results})
    family = sum(p is not None for p in adjusted.values())  # a comparison that is not testable is not in it
    for k, c in results.items():
        p_holm = adjusted[k]
        c["p_holm"] = _p3(p_holm)
        c["significant"] = bool(p_holm is not None and p_holm < e.alpha)
        c["sentence"] = _sentence(c, False, family)
    secondary = {"family": family, "correction": "holm", "alpha": e.alpha, "comparisons": results}
    return primary, secondary


def _p3(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.3g}")


def _rounded(r: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready: effects and spreads to 4 decimals, p to 3 significant digits (for display only)."""
    r4 = lambda x: round(float(x), 4)  # noqa: E731
    r4s = lambda xs: None if xs is None else [r4(x) for x in xs]  # noqa: E731 - no interval when not testable
    return {
        "estimate": r4(r["estimate"]),
        "ci95": r4s(r["ci"]),
        "ci95_percentile": r4s(r["ci_percentile"]),
        "se": r4(r["se"]),
        "se_runs": r4(r["se_runs"]),
        "se_subjects": r4(r["se_subjects"]),
        "df": round(float(r["df"]), 1) if np.isfinite(r["df"]) else None,
        "p_value": _p3(r["p_value"]),
        "n_runs": r["n_runs"],
        "n_subjects": r["n_subjects"],
        "n_takes": r["n_takes"],
        "n_boot": r["n_boot"],
        "reason": r["reason"],  # why not testable, else None
    }


def truth_scores(pred: pd.DataFrame, truth: pd.DataFrame | None, classes: list[str]) -> dict | None:
    """Accuracy against the simulator's truth beside the labels the models were scored on (QA), per variant and
    test set; and how often those labels agree with the truth on the test takes. None without a truth table."""
    if truth is None or "expression" not in truth:
        return None
    index = {c: i for i, c in enumerate(classes)}
    t = truth.drop_duplicates("take_id").set_index("take_id")["expression"].map(index)
    rows = pred.assign(truth_y=pred["take_id"].map(t))
    scored = rows[rows["truth_y"].notna()]
    out: dict[str, Any] = {
        "takes_with_truth": int(scored["take_id"].nunique()),
        "takes_without_truth_in_classes": int(rows.loc[rows["truth_y"].isna(), "take_id"].nunique()),
        "labels_agree_with_truth": round(float((scored["y"] == scored["truth_y"]).mean()), 4) if len(scored) else None,
        "backends": {},
    }
    for (b, v, test), h in scored.groupby(["backend", "variant", "test"], sort=False):
        hit_truth = (h["pred"] == h["truth_y"]).astype(float).groupby(h["seed"]).mean()
        hit_labels = (h["pred"] == h["y"]).astype(float).groupby(h["seed"]).mean()
        mean, sd = mean_sd(list(hit_truth))
        out["backends"].setdefault(str(b), {}).setdefault(str(v), {})[str(test)] = {
            "accuracy_vs_truth_mean": None if mean is None else round(mean, 4),
            "accuracy_vs_truth_std": None if sd is None else round(sd, 4),
            "accuracy_vs_labels_mean": round(float(hit_labels.mean()), 4),
        }
    return out


def skin_tone_accuracy(pred: pd.DataFrame, tones: pd.Series | None) -> dict | None:
    """Accuracy per skin tone (backend -> variant -> test set -> tone), pooled over seeds; None without tones."""
    if tones is None or tones.empty:
        return None
    rows = pred.assign(tone=pred["take_id"].map(tones))
    rows = rows[rows["tone"].notna()]
    if rows.empty:
        return None
    out: dict[str, Any] = {}
    for (b, v, test), h in rows.groupby(["backend", "variant", "test"], sort=False):
        per = {str(tone): round(float((g["y"] == g["pred"]).mean()), 4) for tone, g in h.groupby("tone")}
        out.setdefault(str(b), {}).setdefault(str(v), {})[str(test)] = per
    return out


def _tones(truth: pd.DataFrame | None, manifest: pd.DataFrame | None) -> pd.Series | None:
    """Skin tone per take: the manifest's `skin_tone` when a dataset records it, else the simulator's truth."""
    if manifest is not None and "skin_tone" in manifest:
        return manifest.set_index("take_id")["skin_tone"].dropna().astype(str)
    if truth is not None and "skin_tone_index" in truth:
        return truth.drop_duplicates("take_id").set_index("take_id")["skin_tone_index"].map(lambda i: f"tone{int(i)}")
    return None


def dataset_identity(split: dict[str, Any]) -> dict[str, Any]:
    """Which data these metrics are of: the tested takes' count and a digest of their ids."""
    ids = sorted({t for fold in split["folds"] for k in TESTS for t in fold.get(k, [])})
    return {
        "test_takes": len(ids),
        "test_take_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
        "classes": list(split["classes"]),
        "labels": split.get("labels"),
    }


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
    if variant not in set(pred["variant"]):
        variant = str(pred["variant"].iloc[0])  # no LSTM in this study: the first variant predicted

    def seen_accuracy(b: str) -> float:
        m = metrics[b].get(variant, {})
        return float(m.get("test_seen_accuracy_mean", m.get("test_accuracy_mean", -1.0)))

    best = max(metrics, key=seen_accuracy)
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


def _plot_confusions(pred: pd.DataFrame, classes: list[str], out: Path, backend: str) -> None:
    """One backend's confusion matrices (variants x test sets): readable at a normal size, unlike every backend."""
    from pipeline.utils.plots import plt, save

    pred = pred[pred["backend"] == backend]
    variants = list(dict.fromkeys(pred["variant"]))
    tests = [t for t in TESTS if t in set(pred["test"])]
    fig, axes = plt.subplots(len(tests), len(variants), figsize=(2.8 * len(variants), 2.9 * len(tests)), squeeze=False)
    for j, v in enumerate(variants):
        for i, test in enumerate(tests):
            h = pred[(pred["variant"] == v) & (pred["test"] == test)]
            cm = confusion_matrix(h["y"], h["pred"], labels=range(len(classes)), normalize="true")
            ax = axes[i][j]
            ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
            ax.set_title(f"{backend}/{v}: {test}", fontsize=8)
            ax.set_xticks(range(len(classes)), [c[:4] for c in classes], fontsize=7, rotation=90)
            ax.set_yticks(range(len(classes)), [c[:4] for c in classes], fontsize=7)
            for (a, c), val in np.ndenumerate(cm):
                ax.text(
                    c, a, f"{val:.2f}", ha="center", va="center", fontsize=5, color="white" if val > 0.5 else "black"
                )
    save(fig, out)


def effects_table(primary: dict[str, Any], secondary: dict[str, Any]) -> pd.DataFrame:
    """One row per tested effect (primary first): estimate and interval in accuracy points, p, Holm p."""
    cols = ["rank", "comparison", "endpoint", "estimate", "ci_low", "ci_high", "p_value", "p_holm", "significant"]
    rows = []
    items = ([("primary", primary)] if primary.get("status") == "run" else []) + [
        ("secondary", c) for c in secondary["comparisons"].values()
    ]
    for rank, c in items:
        rows.append(
            {
                "rank": rank,
                "comparison": f"{c['backend']}: {c['candidate']} vs {c['baseline']}",
                "endpoint": c["endpoint"],
                "estimate": c["estimate"],
                "ci_low": None if c["ci95"] is None else c["ci95"][0],
                "ci_high": None if c["ci95"] is None else c["ci95"][1],
                "p_value": c["p_value"],
                "p_holm": c.get("p_holm"),
                "significant": c["significant"],
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _plot_effects(effects: pd.DataFrame, out: Path) -> None:
    """Forest plot: each paired effect with its 95 % interval; the primary on top, bold; zero marked."""
    from pipeline.utils.plots import plt, save

    n = max(len(effects), 1)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.32 * n))
    rows = effects.to_dict("records")
    for i, r in enumerate(rows):
        primary = r["rank"] == "primary"
        est = 100 * float(r["estimate"])
        testable = r["ci_low"] is not None and np.isfinite(float(r["ci_low"]))  # else: the point, no interval
        lo, hi = (100 * float(r[k]) for k in ("ci_low", "ci_high")) if testable else (est, est)
        ax.errorbar(
            est,
            n - 1 - i,
            xerr=[[est - lo], [hi - est]],
            fmt="D" if primary else "o",
            color="black" if primary else ("tab:blue" if r["significant"] else "tab:gray"),
            capsize=3,
            ms=6 if primary else 4,
        )
    labels = [f"{'PRIMARY ' if r['rank'] == 'primary' else ''}{r['comparison']} [{r['endpoint']}]" for r in rows]
    ax.set_yticks(range(n - 1, n - 1 - len(labels), -1), labels, fontsize=7)
    ax.axvline(0, color="red", lw=0.8, ls="--")
    ax.set_xlabel("paired effect, accuracy points (95 % interval, unadjusted)")
    ax.set_title("Primary (black, pre-registered) and secondary comparisons (blue: Holm-significant)", fontsize=9)
    if effects.empty:
        ax.text(0.5, 0.5, "no comparison: one variant only", transform=ax.transAxes, ha="center")
    save(fig, out)


def _plot_mode_grid(pred: pd.DataFrame, out: Path, backend: str) -> None:
    """Accuracy per mode as a grid (first mode part x the rest: pose x illumination), per variant and test set,
    pooled over seeds and folds; an empty cell is a mode that test set does not have."""
    from pipeline.utils.plots import plt, save

    pred = pred[pred["backend"] == backend]
    parts = pred["mode"].astype(str).str.split("/", n=1)
    pred = pred.assign(_row=parts.str[0], _col=parts.str[1].fillna("-"), _hit=(pred["y"] == pred["pred"]).astype(float))
    rows, cols = sorted(set(pred["_row"])), sorted(set(pred["_col"]))
    variants = list(dict.fromkeys(pred["variant"]))
    tests = [t for t in TESTS if t in set(pred["test"])]
    fig, axes = plt.subplots(
        len(variants),
        len(tests),
        figsize=(1.2 + 1.1 * len(cols) * len(tests), 0.8 + 0.45 * len(rows) * len(variants)),
        squeeze=False,
    )
    for i, v in enumerate(variants):
        for j, test in enumerate(tests):
            h = pred[(pred["variant"] == v) & (pred["test"] == test)]
            grid = h.pivot_table(index="_row", columns="_col", values="_hit", aggfunc="mean").reindex(
                index=rows, columns=cols
            )
            ax = axes[i][j]
            ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
            for (a, c), val in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(val):
                    ax.text(
                        c,
                        a,
                        f"{val:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if val < 0.5 else "black",
                    )
            ax.set_title(f"{v}: {test}", fontsize=7)
            ax.set_xticks(range(len(cols)), cols, fontsize=6, rotation=45)
            ax.set_yticks(range(len(rows)), rows, fontsize=6)
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
    e: ExperimentParams,
    split: dict[str, Any],
    pred: pd.DataFrame,
    labels: pd.DataFrame | None,
    manifest: pd.DataFrame | None,
    truth: pd.DataFrame | None = None,
    probe_rows: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The report, the guesses for `annotate push --guesses`, the named confusion rows and the effects table."""
    classes = split["classes"]
    backends = list(dict.fromkeys(pred["backend"]))
    metrics = {b: summarise(pred[pred["backend"] == b], classes) for b in backends}
    primary, secondary = comparisons(pred, e, fp.protocol)
    report = {
        "protocol": fp.protocol,
        "dataset": dataset_identity(split),
        "labels": split.get("labels"),
        "classes": classes,
        "test_sets": [t for t in TESTS if t in set(pred["test"])],
        "variants": list(dict.fromkeys(pred["variant"])),
        "seeds": list(p.seeds),
        "feature_seeds": list(fp.seeds),
        "independent_runs": int(pred["feature_seed"].nunique()),
        "primary": primary,
        "secondary": secondary,
        "backends": metrics,
        "per_skin_tone_accuracy": skin_tone_accuracy(pred, _tones(truth, manifest)),
        "against_truth": truth_scores(pred, truth, classes),
        "probes": probe_report(probe_rows, e),
        # per-seed paired t-tests, uncorrected and pseudo-replicated where seeds share an extractor: superseded by
        # `primary` and `secondary`, kept so earlier reports can be compared
        "verdicts": {b: verdicts(pred[pred["backend"] == b]) for b in backends},
        "qa_label_losses": qa_losses(labels, manifest),
    }
    named = pred.assign(actual=[classes[i] for i in pred["y"]], predicted=[classes[i] for i in pred["pred"]])
    confusion = named[["backend", "variant", "seed", "test", "mode", "take_id", "actual", "predicted"]]
    return report, guesses(pred, metrics, classes), confusion, effects_table(primary, secondary)


def probe_report(rows: pd.DataFrame | None, e: ExperimentParams) -> dict[str, Any] | None:
    """The linear probes (pipeline/learn/probes.py) summarised, with sentences on the primary pair."""
    if rows is None:
        return None
    summary = probes.summarise_probes(rows)
    pr = e.primary
    return {
        "method": (
            "linear discriminant analysis (standardised inputs, Ledoit-Wolf shrinkage: nothing tuned) reading each "
            f"mode factor from a representation, scored by cross-validation grouped by test subject (up to "
            f"{probes.PROBE_FOLDS} folds), over every test take of each fold; mean and SD over independent runs "
            "(feature extractors)"
        ),
        "findings": probes.findings(summary, pr.backend, pr.baseline, pr.candidate),
        "results": summary,
    }


def _truth_table(layout: Layout, params: Params) -> pd.DataFrame | None:
    """The simulator's truth (qa.truth) when the data has one: a file, or a folder holding takes.csv; else None."""
    if not params.qa.truth:
        return None
    path = layout.resolve(params.qa.truth)
    if path.is_dir():
        path = path / "takes.csv"
    return read(path, "truth table", pd.read_csv) if path.is_file() else None


def stale_outputs(layout: Layout) -> list[Path]:
    """Every output of the stage: removed before it runs, so a failure never leaves another run's metrics."""
    return [
        layout.metrics,
        layout.predictions,
        layout.confusion,
        layout.confusion_plot,
        layout.learning_curves_plot,
        layout.effects,
        layout.effects_plot,
        layout.mode_accuracy_plot,
        layout.probes,
        layout.probes_plot,
    ]


def run(layout: Layout, params: Params) -> None:
    """Stage `evaluate`: models, features, splits (labels, manifest, truth when present) in; metrics, guesses, plots.

    Every output of a previous evaluation is removed first: the metrics on disk are this run's or none.
    """
    p, fp = params.train, params.features
    for old in stale_outputs(layout):
        if old.is_file():  # (a folder that cannot hold outputs is the writers' one-line error, below)
            old.unlink()
    VARIANTS.check(p.variants, PARAMS_KEY)
    split = load_split(fp.protocol, layout.splits)
    classes = split["classes"]
    # one model at a time (a large dataset's features and models never sit in memory together)
    pred_parts: list[pd.DataFrame] = []
    probe_parts: list[pd.DataFrame] = []
    seen_inputs: set[tuple[Any, ...]] = set()
    for model in fitted(p, fp, split, layout.features, layout.models):
        pred_parts.append(predictions([model]))
        probe_parts.append(probes.run_probes(probe_items([model]), params.split.mode_parts, seen_inputs))
    pred = pd.concat(pred_parts, ignore_index=True) if pred_parts else pd.DataFrame()
    probe_rows = pd.concat(probe_parts, ignore_index=True) if probe_parts else pd.DataFrame(columns=probes.COLUMNS)
    if pred.empty:
        raise LearnInputError(
            f"{layout.splits / (fp.protocol + '.json')}: no fold has a test, test_seen or test_unseen take to evaluate"
        )
    report, guessed, confusion, effects = evaluate(
        p,
        fp,
        params.experiment,
        split,
        pred,
        _optional_table(layout.labels),
        _optional_table(layout.manifest),
        _truth_table(layout, params),
        probe_rows,
    )
    io.write_csv(layout.predictions, guessed)
    io.write_csv(layout.confusion, confusion)
    io.write_csv(layout.effects, effects)
    backend = params.experiment.primary.backend
    _plot_confusions(pred, classes, layout.confusion_plot, backend if backend in report["backends"] else fp.backends[0])
    _plot_effects(effects, layout.effects_plot)
    _plot_mode_grid(pred, layout.mode_accuracy_plot, backend if backend in report["backends"] else fp.backends[0])
    table = probes.probes_table(report["probes"]["results"])
    io.write_csv(layout.probes, table)
    probes.plot_probes(table, layout.probes_plot, backend if backend in report["backends"] else fp.backends[0])
    if layout.learning_curves.exists():
        _plot_curves(read(layout.learning_curves, "learning curves", pd.read_csv), layout.learning_curves_plot)
    # the metric report last: when it exists, every other output of the stage does
    io.write_json(
        layout.metrics,
        with_provenance(
            report,
            params,
            "features.protocol",
            "features.backends",
            "features.seeds",
            "train",
            "experiment",
            "qa.truth",
            "split.mode_parts",
        ),
    )
    for b, ms in report["backends"].items():
        for v, m in ms.items():
            figures = "   ".join(
                f"{t} {m[f'{t}_accuracy_mean']:.3f} +- {m[f'{t}_accuracy_std'] or 0.0:.3f}"
                for t in report["test_sets"]
                if f"{t}_accuracy_mean" in m
            )
            log.info("%-9s %-12s %s", b, v, figures)
    pr = report["primary"]
    log.info("%s", pr.get("sentence") or f"primary test not run: {pr.get('reason')}")
    for name, c in report["secondary"]["comparisons"].items():
        log.info("%s: %s", name, c["sentence"])
    for sentence in report["probes"]["findings"]:
        log.info("probes: %s", sentence)


if __name__ == "__main__":
    raise SystemExit(main(run))
