"""evaluate's report on predictions whose truth is known: every protocol shape, the primary test, stale metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.layout import Layout
from pipeline.learn import evaluate
from pipeline.learn.common import LearnInputError, feature_file
from pipeline.learn.train import checkpoint_path
from pipeline.models.registry import make_model
from pipeline.params import Params
from pipeline.stage import EXIT_INPUT, invoke
from tests.learn.conftest import learn_params, one_line_error

CLASSES = ["happiness", "surprise"]
SUBJECTS = [f"sub-{i}" for i in range(12)]


def _pred(
    rng: np.random.Generator,
    accuracy: dict[tuple[str, str], float],
    tests: tuple[str, ...] = ("test_seen", "test_unseen"),
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    feature_seeds: tuple[int, ...] = (0, 1, 2, 3),
    backend: str = "cnn",
) -> pd.DataFrame:
    """Predictions as evaluate's `predictions` returns them: (variant, test) -> accuracy, 6 takes per subject."""
    rows = []
    for i, seed in enumerate(seeds):
        fs = feature_seeds[i % len(feature_seeds)]
        for test in tests:
            for s in SUBJECTS:
                for j in range(6):
                    y = j % 2
                    u = rng.random()  # the same take is hard for every variant
                    for (variant, t), acc in accuracy.items():
                        if t != test:
                            continue
                        rows.append(
                            {
                                "backend": backend,
                                "variant": variant,
                                "seed": seed,
                                "run": i,
                                "feature_seed": fs,
                                "fold": 0,
                                "test": test,
                                "take_id": f"{s}-{test}-{j}",
                                "subject_id": s,
                                "mode": "yaw+30_pitch+0/dim" if test == "test_unseen" else "yaw+0_pitch+0/frontal",
                                "y": y,
                                "pred": y if u < acc else 1 - y,
                                "confidence": 0.9,
                            }
                        )
    return pd.DataFrame(rows)


def _split(pred: pd.DataFrame) -> dict:
    fold = {"fold": 0} | {t: sorted(set(pred.loc[pred["test"] == t, "take_id"])) for t in set(pred["test"])}
    return {"classes": CLASSES, "labels": "QA-aggregated labels", "folds": [fold]}


def _params(params: Params, protocol: str, **train) -> Params:
    return learn_params(params, {"protocol": protocol, "backends": ["cnn"], "seeds": [0, 1, 2, 3]}, train or None)


def _experiment(params: Params, protocol: str) -> Params:
    e = params.experiment
    return params.model_copy(
        update={"experiment": e.model_copy(update={"primary": e.primary.model_copy(update={"protocol": protocol})})}
    )


ROBUST = {
    ("lstm", "test_seen"): 0.9,
    ("lstm", "test_unseen"): 0.5,
    ("mv_lstm", "test_seen"): 0.9,
    ("mv_lstm", "test_unseen"): 0.8,  # loses 10 points where the LSTM loses 40: a drop interaction of +0.3
    ("mean_pool", "test_seen"): 0.7,
    ("mean_pool", "test_unseen"): 0.5,
}


def test_the_primary_test_reports_the_drop_interaction_and_secondaries_are_holm_corrected(params: Params) -> None:
    pred = _pred(np.random.default_rng(0), ROBUST)
    p = _experiment(
        _params(params, "leave_one_pose_out", variants=["lstm", "mv_lstm", "mean_pool"]), "leave_one_pose_out"
    )
    report, guesses, _, effects = evaluate.evaluate(p.train, p.features, p.experiment, _split(pred), pred, None, None)
    pr = report["primary"]
    assert pr["status"] == "run" and pr["endpoint"] == "drop_interaction" and pr["significant"]
    assert pr["estimate"] == pytest.approx(0.3, abs=0.08) and pr["ci95"][0] < pr["estimate"] < pr["ci95"][1]
    assert pr["n_runs"] == 4 and pr["n_subjects"] == 12
    assert pr["sentence"].startswith("Primary (pre-registered) test on leave_one_pose_out")
    assert "mv_lstm loses less than lstm on unseen modes" in pr["sentence"]
    sec = report["secondary"]
    names = set(sec["comparisons"])
    assert "cnn/mv_lstm_vs_lstm/drop_interaction" not in names  # the primary is not in the secondary family
    assert names == {
        "cnn/mv_lstm_vs_lstm/unseen_gain",
        "cnn/mean_pool_vs_lstm/drop_interaction",
        "cnn/mean_pool_vs_lstm/unseen_gain",
    }
    assert sec["family"] == 3 and sec["correction"] == "holm"
    for c in sec["comparisons"].values():
        assert c["p_holm"] >= c["p_value"] and c["sentence"].startswith("Secondary test")
        assert "Holm-corrected over 3 secondary comparisons" in c["sentence"]
    assert report["variants"] == ["lstm", "mv_lstm", "mean_pool"]  # from the data, not a fixed list
    assert effects["rank"].tolist()[0] == "primary" and len(effects) == 4
    m = report["backends"]["cnn"]["lstm"]
    sd = np.std(
        [
            ((g["y"] == g["pred"]).mean())
            for _, g in pred[(pred["variant"] == "lstm") & (pred["test"] == "test_seen")].groupby("seed")
        ],
        ddof=1,
    )
    assert m["test_seen_accuracy_std"] == pytest.approx(sd, abs=1e-4)  # sample SD, as the tests use
    assert set(guesses["take_id"]) == set(pred["take_id"])
    json.dumps(report)


def test_a_subject_fold_protocol_with_one_test_set_is_evaluated(params: Params) -> None:
    acc = {("lstm", "test"): 0.8, ("mv_lstm", "test"): 0.8}
    pred = _pred(np.random.default_rng(1), acc, tests=("test",))
    p = _params(params, "subject_kfold")
    report, guesses, confusion, effects = evaluate.evaluate(
        p.train, p.features, p.experiment, _split(pred), pred, None, None
    )
    assert report["test_sets"] == ["test"] and "test_accuracy_mean" in report["backends"]["cnn"]["lstm"]
    assert report["primary"]["status"] == "not run" and "subject_kfold" in report["primary"]["reason"]
    assert list(report["secondary"]["comparisons"]) == ["cnn/mv_lstm_vs_lstm/test_gain"]
    assert len(guesses) == pred["take_id"].nunique() and len(effects) == 1


def test_a_prediction_without_its_pair_is_one_line(params: Params) -> None:
    pred = _pred(np.random.default_rng(2), ROBUST)
    pred = pred.drop(pred[(pred["variant"] == "mv_lstm") & (pred["seed"] == 1)].index[:3])
    p = _experiment(_params(params, "leave_one_pose_out"), "leave_one_pose_out")
    with pytest.raises(LearnInputError, match=r"^3 prediction\(s\) of lstm on features cnn have no pair") as e:
        evaluate.evaluate(p.train, p.features, p.experiment, _split(pred), pred, None, None)
    assert "\n" not in str(e.value)


def test_the_declared_pair_missing_from_the_study_is_one_line(params: Params) -> None:
    acc = {k: v for k, v in ROBUST.items() if k[0] != "mv_lstm"}
    pred = _pred(np.random.default_rng(3), acc)
    p = _experiment(_params(params, "leave_one_pose_out"), "leave_one_pose_out")
    with pytest.raises(LearnInputError, match=r"^experiment.primary: no mv_lstm vs lstm drop_interaction"):
        evaluate.evaluate(p.train, p.features, p.experiment, _split(pred), pred, None, None)


def test_skin_tones_and_truth_are_reported_when_the_data_has_them(params: Params) -> None:
    pred = _pred(np.random.default_rng(4), ROBUST)
    takes = sorted(set(pred["take_id"]))
    y = pred.drop_duplicates("take_id").set_index("take_id")["y"]
    # the truth disagrees with the QA label on every fourth take; tones cycle over subjects
    truth = pd.DataFrame(
        {
            "take_id": takes,
            "expression": [CLASSES[int(y[t]) if i % 4 else 1 - int(y[t])] for i, t in enumerate(takes)],
            "skin_tone_index": [int(t.split("-")[1]) % 3 for t in takes],
        }
    )
    p = _experiment(_params(params, "leave_one_pose_out"), "leave_one_pose_out")
    report, *_ = evaluate.evaluate(p.train, p.features, p.experiment, _split(pred), pred, None, None, truth)
    tones = report["per_skin_tone_accuracy"]["cnn"]["lstm"]["test_seen"]
    assert set(tones) == {"tone0", "tone1", "tone2"}
    vs = report["against_truth"]
    assert vs["labels_agree_with_truth"] == pytest.approx(0.75, abs=0.01) and vs["takes_with_truth"] == len(takes)
    seen = vs["backends"]["cnn"]["lstm"]["test_seen"]
    assert seen["accuracy_vs_truth_mean"] < seen["accuracy_vs_labels_mean"]
    none, *_ = evaluate.evaluate(p.train, p.features, p.experiment, _split(pred), pred, None, None, None)
    assert none["per_skin_tone_accuracy"] is None and none["against_truth"] is None


def _tiny_trained_project(root: Path, p: Params) -> Layout:
    """subject_kfold split, one fold, random features and untrained checkpoints: enough to run the shell."""
    lay = Layout(root)
    lay.splits.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"{s}-t{j}" for s in SUBJECTS[:6] for j in range(4)]
    subj = [t.split("-t")[0] for t in ids]
    fold = {
        "fold": 0,
        "train": [t for t, s in zip(ids, subj) if s in SUBJECTS[:3]],
        "val": [t for t, s in zip(ids, subj) if s == SUBJECTS[3]],
        "test": [t for t, s in zip(ids, subj) if s in SUBJECTS[4:6]],
    }
    (lay.splits / "subject_kfold.json").write_text(
        json.dumps({"protocol": "subject_kfold", "classes": CLASSES, "labels": "prompted", "folds": [fold]})
    )
    lengths = np.full(len(ids), 3)
    for fs in p.features.seeds:
        path = feature_file("subject_kfold", "cnn", fs, 0, lay.features)
        path.parent.mkdir(parents=True)
        np.savez(
            path,
            take_ids=np.array(ids),
            offsets=np.arange(0, 3 * len(ids) + 1, 3),
            valid=np.ones(3 * len(ids), bool),
            lengths=lengths,
            labels=np.arange(len(ids)) % 2,
            modes=np.array(["yaw+0_pitch+0/frontal"] * len(ids)),
            subjects=np.array(subj),
            features=rng.normal(size=(3 * len(ids), 8)).astype(np.float32),
        )
    for v in p.train.variants:
        for seed in p.train.seeds:
            torch.manual_seed(seed)
            model = make_model(
                v, input_size=8, hidden=p.train.hidden, n_classes=2, n_modes=0, dropout=0.0, adversarial_weight=0.1
            )
            path = checkpoint_path("subject_kfold", "cnn", v, 0, seed, lay.models)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"variant": v, "input_size": 8, "n_classes": 2, "mode_names": [], "state_dict": model.state_dict()},
                path,
            )
    return lay


def test_evaluate_runs_on_subject_kfold_and_replaces_a_previous_datasets_metrics(
    params: Params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = learn_params(
        params,
        {"protocol": "subject_kfold", "backends": ["cnn"], "seeds": [0, 1]},
        {"seeds": [0, 1], "hidden": 4, "variants": ["lstm", "mean_pool"]},
    )
    lay = _tiny_trained_project(tmp_path, p)
    lay.reports.mkdir()
    lay.metrics.write_text(json.dumps({"protocol": "unseen_mode", "from": "the simulator"}))
    with caplog.at_level(logging.INFO):
        evaluate.run(lay, p)
    rep = json.loads(lay.metrics.read_text())
    assert rep["protocol"] == "subject_kfold" and "from" not in rep and rep["test_sets"] == ["test"]
    assert rep["dataset"]["test_takes"] == 8 and rep["independent_runs"] == 2
    assert rep["primary"]["status"] == "not run"
    for out in (lay.effects, lay.effects_plot, lay.mode_accuracy_plot, lay.confusion_plot, lay.predictions):
        assert out.is_file()

    # the same project loses its split: a one-line error, and no metrics of the earlier run stay behind
    (lay.splits / "subject_kfold.json").unlink()
    caplog.clear()
    assert invoke(evaluate.run, lay, p) == EXIT_INPUT
    assert "no such protocol" in one_line_error(caplog)
    assert not lay.metrics.exists() and not lay.effects.exists() and not lay.predictions.exists()


def _fake_bootstrap(monkeypatch: pytest.MonkeyPatch, p_values: list[float | None]) -> None:
    """joint_bootstrap replaced by results with the given p, in call order (backend, candidate, endpoint)."""
    queue = iter(p_values)

    def fake(*_args: object, **_kw: object) -> dict:
        p = next(queue)
        testable = p is not None
        return {
            "estimate": 0.05,
            "ci": [0.0001, 0.0999] if testable else None,
            "ci_percentile": [0.0001, 0.0999] if testable else None,
            "se": 0.025,
            "se_runs": 0.01,
            "se_subjects": 0.02,
            "df": 30.0 if testable else float("nan"),
            "p_value": p,
            "n_runs": 4,
            "n_subjects": 12 if testable else 1,
            "n_takes": 72,
            "n_boot": 400,
            "reason": None if testable else "one test subject: the sampling of people cannot be estimated",
        }

    monkeypatch.setattr(evaluate, "joint_bootstrap", fake)


def _three_variants(params: Params) -> tuple[pd.DataFrame, Params]:
    pred = _pred(np.random.default_rng(5), ROBUST)
    p = _experiment(
        _params(params, "leave_one_pose_out", variants=["lstm", "mv_lstm", "mean_pool"]), "leave_one_pose_out"
    )
    return pred, p


def test_significance_and_holm_use_the_unrounded_p(params: Params, monkeypatch: pytest.MonkeyPatch) -> None:
    """p 0.04996 is shown as 0.05 but is below alpha; Holm over three secondaries takes 3 x 0.016653 = 0.04996
    (significant), not 3 x 0.0167 = 0.0501 (the rounded p)."""
    pred, p = _three_variants(params)
    _fake_bootstrap(monkeypatch, [0.04996, 0.016653, 0.9, 0.9])
    primary, secondary = evaluate.comparisons(pred, p.experiment, "leave_one_pose_out")
    assert primary["p_value"] == 0.05 and primary["significant"]  # shown rounded, decided unrounded
    assert "mv_lstm loses less than lstm" in primary["sentence"]
    first = secondary["comparisons"]["cnn/mv_lstm_vs_lstm/unseen_gain"]
    assert first["p_value"] == 0.0167 and first["p_holm"] == 0.05 and first["significant"]
    assert secondary["family"] == 3 and "Holm-corrected over 3 secondary comparisons" in first["sentence"]
    assert not any(c["significant"] for k, c in secondary["comparisons"].items() if c is not first)


def test_a_comparison_that_is_not_testable_says_why_and_does_not_crash(
    params: Params, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pred, p = _three_variants(params)
    _fake_bootstrap(monkeypatch, [None, None, 0.01, 0.3])
    primary, secondary = evaluate.comparisons(pred, p.experiment, "leave_one_pose_out")
    assert primary["p_value"] is None and primary["ci95"] is None and not primary["significant"]
    assert primary["sentence"].endswith("not testable: one test subject: the sampling of people cannot be estimated.")
    assert primary["reason"].startswith("one test subject")
    untested = secondary["comparisons"]["cnn/mv_lstm_vs_lstm/unseen_gain"]
    assert untested["p_holm"] is None and not untested["significant"] and "not testable" in untested["sentence"]
    assert secondary["family"] == 2  # Holm over the two testable ones
    assert secondary["comparisons"]["cnn/mean_pool_vs_lstm/drop_interaction"]["p_holm"] == pytest.approx(0.02)
    effects = evaluate.effects_table(primary, secondary)
    assert effects["ci_low"].isna().sum() == 2
    evaluate._plot_effects(effects, tmp_path / "effects.png")
    assert (tmp_path / "effects.png").is_file()
    json.dumps([primary, secondary])
