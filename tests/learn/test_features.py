"""The features stage on a tiny synthetic experiment: ragged, training-only statistics, deterministic, its faults."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.layout import Layout
from pipeline.learn import features
from pipeline.learn.backends import make_backend
from pipeline.learn.common import load_features, load_split
from pipeline.params import Params
from pipeline.registry import UnknownNameError
from pipeline.stage import EXIT_ENVIRONMENT, EXIT_INPUT, invoke
from tests.learn.conftest import learn_params, one_line_error, project


@pytest.fixture(scope="module")
def built(experiment: Layout, params: Params, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    lay = project(experiment, tmp_path_factory.mktemp("features"))
    features.run(lay, learn_params(params))
    return lay


def test_features_are_ragged_per_backend_and_seed(built: Layout) -> None:
    fold = load_split("unseen_mode", built.splits)["folds"][0]
    for backend in ("cnn", "cnn_delta", "cnn_pair"):
        for seed in (0, 1):
            d = load_features("unseen_mode", backend, seed, 0, built.features)
            lengths = np.diff(d["offsets"])
            assert sorted(set(lengths)) == [6, 8]  # takes keep their own length, no padding
            assert d["features"].shape == (int(d["offsets"][-1]), 8)
            assert len(d["take_ids"]) == len({t for k in ("train", "val", "test_seen", "test_unseen") for t in fold[k]})
            assert not d["features"][~d["valid"]].any()  # missing faces are zero
            assert (d["lengths"] == lengths).all()  # the last frame of every take was found


def test_the_report_records_what_computed_the_features(built: Layout) -> None:
    rep = json.loads(built.features_report.read_text())
    assert len(rep["extractors"]) == 3 * 2 and rep["backends"] == ["cnn", "cnn_delta", "cnn_pair"]
    prov = rep["provenance"]
    assert prov["params"]["features"]["backends"] == ["cnn", "cnn_delta", "cnn_pair"]
    assert prov["threads"] == 1 and prov["workers"] == 1 and isinstance(prov["onednn"], bool) and prov["torch"]
    assert prov["mv_scan"].startswith("not used")


def test_standardised_with_training_statistics_only(built: Layout) -> None:
    fold = load_split("unseen_mode", built.splits)["folds"][0]
    d = load_features("unseen_mode", "cnn", 0, 0, built.features)
    pos = {t: i for i, t in enumerate(d["take_ids"])}
    train = np.zeros(len(d["valid"]), bool)
    for t in fold["train"]:
        train[d["offsets"][pos[t]] : d["offsets"][pos[t] + 1]] = True
    x = d["features"][train & d["valid"]]
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
    live = x.std(0) > 1e-6  # a dead ReLU channel stays 0
    np.testing.assert_allclose(x.std(0)[live], 1, atol=1e-3)
    test = d["features"][~train & d["valid"]]
    assert np.abs(test.mean(0)).max() > 1e-3  # the test takes were not used for the scaling


def _copy_inputs(experiment: Layout, root: Path) -> Layout:
    lay = Layout(root)
    shutil.copytree(experiment.aligned, lay.aligned)
    shutil.copytree(experiment.splits, lay.splits)
    return lay


def test_the_test_subjects_never_change_training_features(experiment: Layout, params: Params, tmp_path: Path) -> None:
    """Changing every test take's frames leaves the training takes' features identical."""
    a_lay = _copy_inputs(experiment, tmp_path / "a")
    b_lay = _copy_inputs(experiment, tmp_path / "b")
    fold = load_split("unseen_mode", a_lay.splits)["folds"][0]
    p = learn_params(params, {"backends": ["cnn_delta"], "seeds": [0]})
    for t in fold["test_seen"] + fold["test_unseen"]:
        z = dict(np.load(b_lay.aligned / f"{t}.npz"))
        np.savez(b_lay.aligned / f"{t}.npz", frames=255 - z["frames"], valid=z["valid"])
    features.run(a_lay, p)
    features.run(b_lay, p)
    a, b = (load_features("unseen_mode", "cnn_delta", 0, 0, lay.features) for lay in (a_lay, b_lay))
    pos = {t: i for i, t in enumerate(a["take_ids"])}
    rows = np.concatenate([np.arange(a["offsets"][pos[t]], a["offsets"][pos[t] + 1]) for t in fold["train"]])
    np.testing.assert_array_equal(a["features"][rows], b["features"][rows])
    np.testing.assert_array_equal(a["train_mean"], b["train_mean"])


def test_feature_files_are_byte_identical_when_rebuilt_with_any_number_of_workers(
    experiment: Layout, params: Params, tmp_path: Path
) -> None:
    lays = {}
    for r, workers in (("a", 1), ("b", 2)):
        lays[r] = project(experiment, tmp_path / r)
        features.run(lays[r], learn_params(params, {"backends": ["cnn", "hog"], "seeds": [0], "workers": workers}))
    a, b = lays["a"].features, lays["b"].features
    files = sorted(f.relative_to(a) for f in a.rglob("*.npz"))
    assert len(files) == 2
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert not list(a.rglob("*.tmp*")) and not list(a.parent.glob(".*.tmp"))


def _disk_full(dest: Path, arrays: dict) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", str(dest))


def test_a_full_disk_stops_the_stage_in_one_line_and_writes_nothing(
    experiment: Layout, params: Params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lay = project(experiment, tmp_path)
    p = learn_params(params, {"backends": ["hog"], "seeds": [0]})
    assert invoke(features.run, lay, p, save=_disk_full) == EXIT_ENVIRONMENT
    assert "No space left on device" in one_line_error(caplog)
    assert not lay.features.exists() and not lay.features_report.exists()
    assert not [f for f in lay.processed.iterdir() if f.name.startswith(".")]  # the temporary folder is gone


def test_a_damaged_aligned_take_is_one_line_naming_the_file_and_field(
    experiment: Layout, params: Params, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lay = _copy_inputs(experiment, tmp_path)
    victim = load_split("unseen_mode", lay.splits)["folds"][0]["test_unseen"][0]
    z = dict(np.load(lay.aligned / f"{victim}.npz"))
    np.savez(lay.aligned / f"{victim}.npz", valid=z["valid"])  # no frames
    assert invoke(features.run, lay, learn_params(params, {"backends": ["hog"], "seeds": [0]})) == EXIT_INPUT
    line = one_line_error(caplog)
    assert f"{victim}.npz" in line and "'frames'" in line
    assert not lay.features.exists() and not lay.features_report.exists()


def test_an_unknown_backend_fails_first_naming_the_key(params: Params, tmp_path: Path) -> None:
    with pytest.raises(
        UnknownNameError, match=r"^features.backends: unknown feature backend 'sift' \(known: cnn, cnn_delta"
    ):
        features.run(
            Layout(tmp_path), learn_params(params, {"backends": ["hog", "sift"]})
        )  # no input exists: checked first


def test_delta_cancels_what_is_constant_over_a_take() -> None:
    """cnn_delta sees frame minus reference: a subject's constant appearance offset changes nothing."""
    from pipeline.learn.backends import TrainingFrames

    rng = np.random.default_rng(0)
    frames = rng.integers(50, 150, (20, 3, 16, 16), dtype=np.uint8)
    refs = rng.integers(50, 150, (20, 3, 16, 16), dtype=np.uint8)
    data = TrainingFrames(frames, refs, np.arange(20) % 2)
    for name, invariant in (("cnn_delta", True), ("cnn", False), ("cnn_pair", False)):
        b = make_backend(name, input_size=16, feature_dim=8, epochs=1, batch_size=8, lr=0.01)
        b.fit(data, data, 2, seed=0)
        plain = b.encode(frames[:4], refs[0])
        shifted = b.encode(frames[:4] + 40, refs[0] + 40)
        assert np.allclose(plain, shifted, atol=1e-5) == invariant


def test_pair_input_is_the_difference_stacked_on_the_frame() -> None:
    """cnn_pair's 6 channels are exactly cnn_delta's input then cnn's: the same crops, nothing else."""
    import torch

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (4, 3, 16, 16), dtype=np.uint8)
    refs = np.repeat(frames[:1], 4, axis=0)
    kw = dict(input_size=16, feature_dim=8, epochs=1, batch_size=8, lr=0.01)
    dev = torch.device("cpu")
    pair, delta, frame = (
        make_backend(n, **kw)._batch(frames, refs, dev, None) for n in ("cnn_pair", "cnn_delta", "cnn")
    )
    assert pair.shape == (4, 6, 16, 16)
    torch.testing.assert_close(pair[:, :3], delta)
    torch.testing.assert_close(pair[:, 3:], frame)
    assert not delta[0].any()  # the reference frame minus itself


@pytest.mark.parametrize("size", [16, 56, 112])
def test_frame_cnn_gives_feature_dim_numbers_at_any_crop_size(size: int) -> None:
    """The last map is pooled to a fixed 3 x 3 grid before the feature layer: any `features.input_size` works."""
    import torch

    from pipeline.learn.backends.frame_cnn import FrameCNN

    torch.manual_seed(0)
    net = FrameCNN(n_classes=6, feature_dim=8, in_channels=6).eval()
    with torch.no_grad():
        x = torch.rand(2, 6, size, size)
        f, logits = net.features(x), net(x)
    assert f.shape == (2, 8) and logits.shape == (2, 6)


def test_hog_backend_and_unknown_names() -> None:
    b = make_backend("hog", input_size=56, feature_dim=8, epochs=1, batch_size=8, lr=0.01)
    x = np.random.default_rng(0).integers(0, 255, (3, 3, 56, 56), dtype=np.uint8)
    out = b.encode(x, x[0])
    assert out.shape == (3, 324) and out.dtype == np.float32
    assert not np.allclose(out[0], out[1])
    with pytest.raises(
        UnknownNameError,
        match=r"features.backends: unknown feature backend 'sift' \(known: cnn, cnn_delta, cnn_pair, hog\)",
    ):
        make_backend("sift")


@pytest.fixture(scope="module")
def crossfit(experiment: Layout, params: Params, tmp_path_factory: pytest.TempPathFactory) -> Layout:
    lay = project(experiment, tmp_path_factory.mktemp("crossfit"))
    features.run(
        lay, learn_params(params, {"backends": ["cnn"], "seeds": [0], "crossfit_folds": 2, "encoding": "logits"})
    )
    return lay


def test_cross_fitted_training_takes_are_encoded_by_a_cnn_that_never_saw_their_subject(crossfit: Layout) -> None:
    """Each inner CNN is fitted on the other group of training subjects and encodes only its own group."""
    rep = json.loads(crossfit.features_report.read_text())
    (ex,) = rep["extractors"]
    fold = load_split("unseen_mode", crossfit.splits)["folds"][0]
    train_subjects = {t.split("_")[0] for t in fold["train"]}
    held = [set(i["subjects_held_out"]) for i in ex["inner"]]
    assert ex["crossfit_folds"] == 2 and len(held) == 2
    assert not held[0] & held[1] and held[0] | held[1] == {f"sub-{s[1:]}" for s in train_subjects}
    assert [i["fit_takes"] for i in ex["inner"]] == [
        sum(f"sub-{t.split('_')[0][1:]}" not in h for t in fold["train"]) for h in held
    ]
    assert 0.0 <= ex["oof_frame_acc"] <= 1.0 and rep["encoding"] == "logits"


def test_cross_fitted_features_are_class_scores_standardised_on_training_takes(crossfit: Layout) -> None:
    d = load_features("unseen_mode", "cnn", 0, 0, crossfit.features)
    assert d["features"].shape[1] == 2  # two classes: the CNNs' class scores, not their 8-number embeddings
    assert not d["features"][~d["valid"]].any()


def test_a_training_take_changed_moves_only_the_takes_its_cnn_did_not_learn_from(
    experiment: Layout, params: Params, tmp_path: Path
) -> None:
    """Out of fold: altering one training subject's frames leaves the encoding of the other takes of its group as it
    was (their CNN never saw that subject), while the CNN that learnt from it encodes the other group differently."""
    fold = load_split("unseen_mode", experiment.splits)["folds"][0]
    a_lay = _copy_inputs(experiment, tmp_path / "a")
    b_lay = _copy_inputs(experiment, tmp_path / "b")
    p = learn_params(params, {"backends": ["cnn"], "seeds": [0], "crossfit_folds": 2, "encoding": "logits"})
    features.run(a_lay, p)
    groups = [i["subjects_held_out"] for i in json.loads(a_lay.features_report.read_text())["extractors"][0]["inner"]]
    victim = groups[0][0]  # encoded by CNN 0, which was fitted on group 1 only
    victim_takes = [t for t in fold["train"] if f"sub-{t.split('_')[0][1:]}" == victim]
    for t in victim_takes:
        z = dict(np.load(b_lay.aligned / f"{t}.npz"))
        np.savez(b_lay.aligned / f"{t}.npz", frames=255 - z["frames"], valid=z["valid"])
    features.run(b_lay, p)
    a, b = (load_features("unseen_mode", "cnn", 0, 0, lay.features) for lay in (a_lay, b_lay))
    pos = {t: i for i, t in enumerate(a["take_ids"])}

    def raw(d: dict, takes: list[str]) -> np.ndarray:  # found frames, standardisation undone (its statistics moved)
        rows = np.concatenate([np.arange(d["offsets"][pos[t]], d["offsets"][pos[t] + 1]) for t in takes])
        rows = rows[d["valid"][rows]]
        return d["features"][rows] * d["train_std"] + d["train_mean"]

    group0 = [t for t in fold["train"] if f"sub-{t.split('_')[0][1:]}" in groups[0] and t not in victim_takes]
    group1 = [t for t in fold["train"] if f"sub-{t.split('_')[0][1:]}" in groups[1]]
    np.testing.assert_allclose(raw(a, group0), raw(b, group0), atol=1e-4)  # CNN 0 never saw the victim
    assert np.abs(raw(a, group1) - raw(b, group1)).max() > 1e-3  # CNN 1 learnt from the victim's frames


def test_cross_fitting_needs_class_scores_and_a_trained_backend(params: Params, tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="crossfit_folds needs features.encoding: logits"):
        learn_params(params, {"crossfit_folds": 2})
    with pytest.raises(ValidationError, match="1 is not a cross-fit"):
        learn_params(params, {"crossfit_folds": 1, "encoding": "logits"})
    with pytest.raises(features.FeaturesConfigError, match="hog has no class scores"):
        features.run(Layout(tmp_path), learn_params(params, {"backends": ["hog"], "encoding": "logits"}))


def test_more_cross_fitting_groups_than_training_subjects_is_one_line(
    experiment: Layout, params: Params, tmp_path: Path
) -> None:
    lay = project(experiment, tmp_path)  # the fold trains on 5 subjects
    p = learn_params(params, {"backends": ["cnn"], "seeds": [0], "crossfit_folds": 6, "encoding": "logits"})
    with pytest.raises(
        features.FeaturesConfigError, match=r"6 groups of training subjects, but fold 0 .* on 5 subject"
    ):
        features.run(lay, p)
    assert not lay.features.exists()
