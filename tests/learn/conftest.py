"""A tiny synthetic experiment: aligned takes whose expression is a bright patch that grows,
on subject-specific backgrounds, with a split file as the split stage writes it, in a project layout."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.layout import Layout
from pipeline.params import FeaturesParams, Params, TrainParams

CLASSES = ["happiness", "surprise"]
SEEN, UNSEEN = "yaw+0_pitch+0/frontal", "yaw+30_pitch+0/frontal"


def _take(rng: np.random.Generator, subject: int, label: int, unseen: bool, n: int) -> tuple[np.ndarray, np.ndarray]:
    frames = np.full((n, 112, 112, 3), 60 + 12 * subject, np.uint8)
    frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
    for t in range(n):
        size = 8 + 5 * t
        y0 = 10 if label == 0 else 60
        frames[t, y0 : y0 + 40, 20 : 20 + size] = 220 if not unseen else 170
    valid = np.ones(n, bool)
    valid[1] = False  # one missing face inside every take
    return frames, valid


@pytest.fixture(scope="session")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    """A project with data/aligned and data/processed/splits of 8 subjects, 2 classes, 2 modes, takes of 6 or 8
    frames; one fold. Shared: tests run stages in `project(experiment, ...)`, which links these two inputs."""
    lay = Layout(tmp_path_factory.mktemp("experiment"))
    lay.aligned.mkdir(parents=True)
    lay.splits.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for s in range(8):
        for label in range(2):
            for rep in range(3):
                for mode in (SEEN, UNSEEN):
                    take = f"s{s}_{CLASSES[label]}_{rep}_{'u' if mode == UNSEEN else 's'}"
                    frames, valid = _take(rng, s, label, mode == UNSEEN, 6 if rep == 0 else 8)
                    np.savez(lay.aligned / f"{take}.npz", frames=frames, valid=valid)
                    rows.append({"take_id": take, "subject_id": f"sub-{s}", "label": CLASSES[label], "mode": mode})
    takes = pd.DataFrame(rows)
    takes.to_parquet(lay.splits / "takes.parquet", index=False)
    of = lambda subs, modes: sorted(takes[takes["subject_id"].isin(subs) & takes["mode"].isin(modes)]["take_id"])  # noqa: E731
    train, val, test = [f"sub-{i}" for i in range(5)], ["sub-5"], ["sub-6", "sub-7"]
    fold = {
        "fold": 0,
        "train": of(train, [SEEN]),
        "val": of(val, [SEEN]),
        "test_seen": of(test, [SEEN]),
        "test_unseen": of(test, [UNSEEN]),
    }
    (lay.splits / "unseen_mode.json").write_text(
        json.dumps({"classes": CLASSES, "labels": "prompted expressions", "folds": [fold]})
    )
    return lay


def project(source: Layout, root: Path, *, link: tuple[str, ...] = ("aligned", "splits")) -> Layout:
    """A fresh project under `root` whose inputs (Layout attribute names) are links to `source`'s."""
    lay = Layout(root)
    for name in link:
        dest: Path = getattr(lay, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(getattr(source, name), target_is_directory=True)
    return lay


def learn_params(params: Params, features: dict | None = None, train: dict | None = None) -> Params:
    """The tests' params with the tiny experiment's features and train sections."""
    return params.model_copy(
        update={"features": features_params(**(features or {})), "train": train_params(**(train or {}))}
    )


def one_line_error(caplog: pytest.LogCaptureFixture) -> str:
    """The stage runner's error line (exactly one record at ERROR, one line)."""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


def features_params(**kw) -> FeaturesParams:
    base = dict(
        protocol="unseen_mode",
        input_size=16,
        feature_dim=8,
        frames_per_take=4,
        epochs=2,
        batch_size=32,
        lr=0.003,
        backends=["cnn", "cnn_delta", "cnn_pair"],
        seeds=[0, 1],
        workers=1,
    )
    return FeaturesParams(**(base | kw))


def train_params(**kw) -> TrainParams:
    base = dict(
        variants=["lstm", "mv_lstm"],
        seeds=[0, 1, 2],
        hidden=8,
        epochs=3,
        patience=2,
        batch_size=16,
        lr=0.01,
        weight_decay=0.0,
        dropout=0.0,
        mode_loss_weight=0.3,
        adversarial_weight=0.1,
        workers=1,
    )
    return TrainParams(**(base | kw))


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest, and a loaded CI machine does not stall on thread spin-waits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
