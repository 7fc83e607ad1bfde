"""Selection on validation only (`train.search`), the same grid for every variant, and what train writes per run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.layout import Layout
from pipeline.learn import features, train
from pipeline.learn.common import load_features, load_split
from pipeline.params import Params
from tests.learn.conftest import learn_params, project, train_params

LINKS = ("aligned", "splits", "features")


@pytest.fixture(scope="module")
def feats(experiment: Layout, params: Params, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """Cross-fitted class scores of one CNN backend, two extractor seeds."""
    lay = project(experiment, tmp_path_factory.mktemp("search_feats"))
    features.run(
        lay, learn_params(params, {"backends": ["cnn"], "epochs": 3, "crossfit_folds": 2, "encoding": "logits"})
    )
    return lay


def test_the_grid_is_every_combination_and_one_empty_setting_without_a_search() -> None:
    assert train.settings(train_params()) == [{}]
    grid = train.settings(train_params(search={"patience": [1, 2], "lr": [0.01, 0.1]}))
    assert grid == [
        {"lr": 0.01, "patience": 1},
        {"lr": 0.01, "patience": 2},
        {"lr": 0.1, "patience": 1},
        {"lr": 0.1, "patience": 2},
    ]
    assert isinstance(train.with_setting(train_params(), {"patience": 3.0}).patience, int)


def test_the_kept_setting_has_the_lowest_validation_loss_and_never_reads_a_test_take(feats: Layout) -> None:
    data = load_features("unseen_mode", "cnn", 0, 0, feats.features)
    fold = load_split("unseen_mode", feats.splits)["folds"][0]
    p = train_params(search={"lr": [1e-5, 0.03]}, epochs=4)
    blind = {**fold, "test_seen": ["no-such-take"], "test_unseen": ["no-such-take"]}  # a read would fail
    ckpt, rows = train.select("lstm", data, blind, p, 0, 2)
    curves = pd.DataFrame(rows)
    best = curves.groupby("setting")["val_loss"].min()
    assert ckpt["setting"] == train.settings(p)[int(best.idxmin())]
    assert ckpt["val_loss"] == pytest.approx(float(best.min()))
    assert curves.loc[curves["selected"], "setting"].nunique() == 1
    assert set(curves["search_lr"]) == {1e-5, 0.03}


def test_every_variant_gets_the_same_grid_and_train_writes_run_and_feature_seed(
    feats: Layout, params: Params, tmp_path: Path
) -> None:
    lay = project(feats, tmp_path, link=LINKS)
    variants = ["lstm", "mv_lstm", "mean_pool", "last_frame"]
    p = learn_params(
        params,
        {"backends": ["cnn"], "crossfit_folds": 2, "encoding": "logits"},
        {"variants": variants, "seeds": [0, 1], "search": {"lr": [0.003, 0.03]}},
    )
    train.run(lay, p)
    curves = pd.read_csv(lay.learning_curves)
    for col in ("backend", "variant", "fold", "seed", "epoch", "train_loss", "val_loss", "val_acc"):
        assert col in curves  # what evaluate and the plots read today
    assert set(curves["variant"]) == set(variants)
    per_variant = curves.groupby("variant")["setting"].unique().map(lambda s: sorted(s))
    assert all(s == [0, 1] for s in per_variant)  # the same budget for each
    assert curves.groupby("seed")["run"].unique().map(list).to_dict() == {0: [0], 1: [1]}
    assert curves.groupby("run")["feature_seed"].unique().map(list).to_dict() == {0: [0], 1: [1]}
    ckpt = torch.load(lay.models / "unseen_mode" / "cnn" / "mean_pool" / "fold0_seed1.pt", weights_only=False)
    assert ckpt["run"] == 1 and ckpt["feature_seed"] == 1 and set(ckpt["setting"]) == {"lr"}


def test_the_device_is_chosen_in_one_place_and_can_be_pinned_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.learn.common import LearnConfigError, device

    monkeypatch.setenv("MVFER_DEVICE", "cpu")
    assert device() == torch.device("cpu")
    monkeypatch.setenv("MVFER_DEVICE", "auto")
    assert device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("MVFER_DEVICE", "tpu")
    with pytest.raises(LearnConfigError, match=r"^\$MVFER_DEVICE='tpu': expected auto, cpu or cuda$"):
        device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("MVFER_DEVICE", "cuda")
        with pytest.raises(LearnConfigError, match="torch sees no CUDA device"):
            device()
