"""train + evaluate on tiny synthetic features: paired seeds, parallel fits equal serial ones, the report, faults."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.layout import Layout
from pipeline.learn import evaluate, features, train
from pipeline.learn.common import feature_file, feature_seed, load_features
from pipeline.params import Params
from pipeline.registry import UnknownNameError
from pipeline.stage import EXIT_ENVIRONMENT, EXIT_INPUT, invoke
from tests.learn.conftest import CLASSES, learn_params, one_line_error, project

LINKS = ("aligned", "splits", "features")


@pytest.fixture(scope="module")
def feats(experiment: Layout, params: Params, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """The experiment with features (3 CNN backends x 2 extractor seeds); projects link these inputs."""
    lay = project(experiment, tmp_path_factory.mktemp("feats"))
    features.run(lay, learn_params(params, {"epochs": 3}))
    return lay


def test_sequence_seeds_cycle_over_feature_seeds() -> None:
    assert [feature_seed(s, [3, 4, 5, 6, 7], [0, 1]) for s in (3, 4, 5, 6, 7)] == [0, 1, 0, 1, 0]


def test_take_tensors_pad_only_to_the_longest_requested_take(feats: Layout) -> None:
    d = load_features("unseen_mode", "cnn", 0, 0, feats.features)
    short = [t for t, n in zip(d["take_ids"], d["lengths"]) if n == 6][:3]
    x, lengths, y = train.take_tensors(d, short, torch.device("cpu"))
    assert x.shape == (3, 6, 8) and lengths.tolist() == [6, 6, 6]
    i = list(d["take_ids"]).index(short[1])
    np.testing.assert_array_equal(x[1].numpy(), d["features"][d["offsets"][i] : d["offsets"][i] + 6])


@pytest.mark.integration
def test_parallel_fits_equal_serial_fits_and_evaluate_reports(feats: Layout, params: Params, tmp_path: Path) -> None:
    lays = {w: project(feats, tmp_path / f"w{w}", link=LINKS) for w in (1, 2)}
    for workers, lay in lays.items():
        train.run(lay, learn_params(params, train={"workers": workers}))
    m1, m2 = lays[1].models, lays[2].models
    ckpts = sorted(p.relative_to(m1) for p in m1.rglob("*.pt"))
    assert len(ckpts) == 3 * 2 * 3  # backends x variants x seeds, one fold
    for c in ckpts:
        a, b = (torch.load(m / c, weights_only=False) for m in (m1, m2))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        assert a["feature_seed"] == feature_seed(int(c.stem.split("seed")[1]), [0, 1, 2], [0, 1])
    assert pd.read_csv(lays[1].learning_curves).equals(pd.read_csv(lays[2].learning_curves))
    for workers, lay in lays.items():  # what trained the models, beside them
        prov = json.loads(lay.models_provenance.read_text())
        assert prov["models"] == 18 and prov["provenance"]["workers"] == workers and prov["provenance"]["threads"] == 1
        assert prov["provenance"]["mv_scan"].split(" ")[0] in ("native", "python")  # mv_lstm ran the scan
        assert prov["provenance"]["params"]["train"]["variants"] == ["lstm", "mv_lstm"]

    lay = lays[1]
    evaluate.run(lay, learn_params(params))
    rep = json.loads(lay.metrics.read_text())
    assert rep["provenance"]["params"]["features.backends"] == ["cnn", "cnn_delta", "cnn_pair"]
    assert rep["provenance"]["mv_scan"].split(" ")[0] in ("native", "python") and "threads" in rep["provenance"]
    assert set(rep["backends"]) == {"cnn", "cnn_delta", "cnn_pair"}
    for b in ("cnn", "cnn_delta", "cnn_pair"):
        assert set(rep["backends"][b]) == {"lstm", "mv_lstm"} and rep["backends"][b]["lstm"]["seeds"] == 3
        v = rep["verdicts"][b]["mv_lstm_vs_lstm"]
        assert v["n_pairs"] == 3 and v["n_subjects"] == 2 and isinstance(v["sentence"], str)
    pred = pd.read_csv(lay.predictions)
    split = json.loads((lay.splits / "unseen_mode.json").read_text())["folds"][0]
    assert list(pred.columns) == ["take_id", "label", "confidence", "model_version"]
    assert sorted(pred["take_id"]) == sorted(split["test_seen"] + split["test_unseen"])
    assert pred["label"].isin(CLASSES).all() and pred["confidence"].between(0, 1).all()
    assert rep["qa_label_losses"] is None
    for out in (lay.confusion, lay.confusion_plot, lay.learning_curves_plot, lay.probes_plot):
        assert out.is_file()
    # the probes: every variant's h_T, the mode cell's m_T and the features alone, for each factor, each backend
    probes = pd.read_csv(lay.probes)
    assert set(probes["backend"]) == {"cnn", "cnn_delta", "cnn_pair"}
    reps = set(zip(probes["variant"], probes["representation"]))
    assert reps == {("input", "input"), ("lstm", "h_T"), ("mv_lstm", "h_T"), ("mv_lstm", "m_T")}
    assert set(probes["factor"]) <= {"pose", "illumination"} and not probes.empty
    # 3 sequence seeds on 2 extractors: 2 independent runs (seeds sharing an extractor are one run)
    assert probes["accuracy_mean"].between(0, 1).all() and (probes["runs"] == 2).all()
    assert rep["probes"]["results"]["cnn"]["mv_lstm"]["m_T"] and "grouped by test subject" in rep["probes"]["method"]


SMALL = {"variants": ["lstm"], "seeds": [0], "epochs": 1}


def _disk_full(ckpt: dict, path: Path) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_train_on_a_full_disk_stops_in_one_line_and_records_nothing(
    feats: Layout, params: Params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lay = project(feats, tmp_path, link=LINKS)
    assert (
        invoke(train.run, lay, learn_params(params, {"backends": ["cnn"]}, SMALL), save=_disk_full) == EXIT_ENVIRONMENT
    )
    assert "No space left on device" in one_line_error(caplog)
    assert not lay.models.exists() and not lay.learning_curves.exists()
    assert not [f for f in lay.root.iterdir() if f.name.startswith(".models")]


def test_train_on_a_damaged_feature_file_is_one_line_naming_it(
    feats: Layout, params: Params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lay = project(feats, tmp_path, link=("splits",))
    path = feature_file("unseen_mode", "cnn", 0, 0, lay.features)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    assert invoke(train.run, lay, learn_params(params, {"backends": ["cnn"]}, SMALL)) == EXIT_INPUT
    assert one_line_error(caplog).startswith(f"{path}: cannot read feature file")
    assert not lay.models.exists()


def test_an_unknown_variant_fails_first_naming_the_key(params: Params, tmp_path: Path) -> None:
    for stage in (train, evaluate):
        with pytest.raises(
            UnknownNameError,
            match=r"^train.variants: unknown model variant 'gru' \(known: last_frame, lstm, lstm_wide, ",
        ):
            stage.run(Layout(tmp_path), learn_params(params, train={"variants": ["lstm", "gru"]}))


@pytest.fixture(scope="module")
def trained(feats: Layout, params: Params, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    lay = project(feats, tmp_path_factory.mktemp("trained"), link=LINKS)
    train.run(lay, learn_params(params, {"backends": ["cnn"]}, SMALL))
    return lay


def test_evaluate_with_no_room_for_its_plots_stops_in_one_line_without_a_metric_report(
    trained: Layout, params: Params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lay = project(trained, tmp_path, link=(*LINKS, "models"))
    lay.reports.mkdir()
    lay.plots.write_text("")  # a file where the plots folder goes: the outputs cannot be written
    assert invoke(evaluate.run, lay, learn_params(params, {"backends": ["cnn"]}, SMALL)) == EXIT_ENVIRONMENT
    assert one_line_error(caplog).startswith("environment: cannot write")
    assert not lay.metrics.exists()


def test_evaluate_without_a_checkpoint_is_one_line_naming_it(
    trained: Layout, params: Params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lay = project(trained, tmp_path, link=(*LINKS, "models"))
    p = learn_params(
        params, {"backends": ["cnn"]}, SMALL | {"variants": ["lstm", "mv_lstm"]}
    )  # mv_lstm was not trained
    assert invoke(evaluate.run, lay, p) == EXIT_INPUT
    missing = train.checkpoint_path("unseen_mode", "cnn", "mv_lstm", 0, 0, lay.models)
    assert one_line_error(caplog) == f"{missing}: no such file (checkpoint)"
    assert not lay.metrics.exists()
