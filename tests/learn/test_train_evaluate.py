"""train + evaluate on tiny synthetic features: paired seeds, parallel fits equal serial ones, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.learn import evaluate, features, train
from pipeline.learn.common import feature_seed
from tests.learn.conftest import CLASSES, features_params, train_params


@pytest.fixture(scope="module")
def feats(experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("feats")
    features.run(features_params(epochs=3), experiment / "splits", experiment / "aligned", out / "features", out / "features.json")
    return out / "features"


def test_sequence_seeds_cycle_over_feature_seeds() -> None:
    assert [feature_seed(s, [3, 4, 5, 6, 7], [0, 1]) for s in (3, 4, 5, 6, 7)] == [0, 1, 0, 1, 0]


def test_take_tensors_pad_only_to_the_longest_requested_take(feats: Path) -> None:
    from pipeline.learn.common import load_features

    d = load_features("unseen_mode", "cnn", 0, 0, feats)
    short = [t for t, n in zip(d["take_ids"], d["lengths"]) if n == 6][:3]
    x, lengths, y = train.take_tensors(d, short, torch.device("cpu"))
    assert x.shape == (3, 6, 8) and lengths.tolist() == [6, 6, 6]
    i = list(d["take_ids"]).index(short[1])
    np.testing.assert_array_equal(x[1].numpy(), d["features"][d["offsets"][i] : d["offsets"][i] + 6])


@pytest.mark.integration
def test_parallel_fits_equal_serial_fits_and_evaluate_reports(experiment: Path, feats: Path, tmp_path: Path) -> None:
    fp = features_params()
    for workers in (1, 2):
        train.run(train_params(workers=workers), fp, experiment / "splits", feats, tmp_path / f"m{workers}", tmp_path / f"c{workers}.csv")
    ckpts = sorted(p.relative_to(tmp_path / "m1") for p in (tmp_path / "m1").rglob("*.pt"))
    assert len(ckpts) == 3 * 2 * 3  # backends x variants x seeds, one fold
    for c in ckpts:
        a, b = (torch.load(tmp_path / m / c, weights_only=False) for m in ("m1", "m2"))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        assert a["feature_seed"] == feature_seed(int(c.stem.split("seed")[1]), [0, 1, 2], [0, 1])
    assert pd.read_csv(tmp_path / "c1.csv").equals(pd.read_csv(tmp_path / "c2.csv"))

    rep = evaluate.run(train_params(), fp, experiment / "splits", feats, tmp_path / "m1", tmp_path / "metrics.json", tmp_path / "plots",
                       tmp_path / "predictions.csv", tmp_path / "no-labels.parquet", tmp_path / "no-manifest.parquet")
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(rep))
    assert set(rep["backends"]) == {"cnn", "cnn_delta", "cnn_pair"}
    for b in ("cnn", "cnn_delta", "cnn_pair"):
        assert set(rep["backends"][b]) == {"lstm", "mv_lstm"} and rep["backends"][b]["lstm"]["seeds"] == 3
        v = rep["verdicts"][b]["mv_lstm_vs_lstm"]
        assert v["n_pairs"] == 3 and v["n_subjects"] == 2 and isinstance(v["sentence"], str)
    pred = pd.read_csv(tmp_path / "predictions.csv")
    split = json.loads((experiment / "splits" / "unseen_mode.json").read_text())["folds"][0]
    assert list(pred.columns) == ["take_id", "label", "confidence", "model_version"]
    assert sorted(pred["take_id"]) == sorted(split["test_seen"] + split["test_unseen"])
    assert pred["label"].isin(CLASSES).all() and pred["confidence"].between(0, 1).all()
    assert rep["qa_label_losses"] is None
