"""Linear probes (pipeline/learn/probes.py): they read a factor that is there, not one that is not, on new subjects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.learn import probes
from pipeline.models.registry import make_model

rng = np.random.default_rng(0)


def _takes(n_subjects: int = 8, per: int = 30, signal: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Takes whose first dimension carries the pose (3 values) and whose other dimensions are noise."""
    pose = np.array(["left", "frontal", "right"])[rng.integers(0, 3, n_subjects * per)]
    x = rng.normal(size=(len(pose), 16))
    x[:, 0] += signal * (pose == "left") - signal * (pose == "right")
    x += np.repeat(rng.normal(size=(n_subjects, 16)), per, 0)  # each subject's own offset
    return x, pose, np.repeat([f"s{i}" for i in range(n_subjects)], per)


def test_a_factor_the_representation_holds_is_read_well_above_chance() -> None:
    x, pose, subjects = _takes()
    scored = probes.probe_score(x, pose, subjects)
    assert scored is not None
    accuracy, chance = scored
    assert accuracy > 0.8 and 0.25 < chance < 0.45


def test_a_factor_it_does_not_hold_is_read_at_chance() -> None:
    x, pose, subjects = _takes(signal=0.0)
    accuracy, chance = probes.probe_score(x, pose, subjects) or (None, None)
    assert accuracy is not None and chance is not None and abs(accuracy - chance) < 0.12


def test_the_probe_is_scored_on_subjects_it_was_not_fitted_on() -> None:
    """Pose told apart by the subjects' own offsets only: within subjects it is perfectly readable, across none."""
    n, per = 6, 30
    subjects = np.repeat([f"s{i}" for i in range(n)], per)
    pose = np.repeat(np.array(["left", "frontal", "right"])[np.arange(n) % 3], per)  # one pose per subject
    x = np.repeat(rng.normal(size=(n, 16)), per, 0) + 0.01 * rng.normal(size=(n * per, 16))
    accuracy, _ = probes.probe_score(x, pose, subjects) or (1.0, 0.0)
    assert accuracy < 0.6


def test_a_probe_the_data_cannot_answer_is_none_and_unknown_values_are_left_out() -> None:
    x, pose, subjects = _takes()
    assert probes.probe_score(x, np.full(len(pose), "frontal"), subjects) is None  # one value
    assert probes.probe_score(x, pose, np.full(len(pose), "s0")) is None  # one subject
    noisy = np.where(np.arange(len(pose)) % 5 == 0, "unknown", pose)
    rows = probes.probe_rows({"h_T": x}, {"pose": noisy}, subjects, backend="b", variant="v", run=0, fold=0)
    assert rows[0]["n_takes"] == int((noisy != "unknown").sum())


def test_factors_come_from_the_mode_parts() -> None:
    modes = ["yaw+0_pitch+0/frontal", "yaw+30_pitch+0/left"]
    got = probes.factor_values(modes, ["pose", "illumination"])
    assert got["pose"].tolist() == ["yaw+0_pitch+0", "yaw+30_pitch+0"]
    assert got["illumination"].tolist() == ["frontal", "left"]
    short = probes.factor_values(["a", "unknown_pose/dim"], ["pose", "illumination"])
    assert short["pose"].tolist() == ["a", "unknown"]  # a pose the log left empty is missing, not a value
    assert short["illumination"].tolist() == ["unknown", "dim"]  # too few parts: that take only is missing


@pytest.mark.parametrize(("variant", "reps"), [("lstm", {"h_T"}), ("mv_lstm", {"h_T", "m_T"}), ("mean_pool", {"h_T"})])
def test_states_are_the_final_hidden_and_mode_cells(variant: str, reps: set[str]) -> None:
    model = make_model(variant, input_size=5, hidden=8, n_classes=3, n_modes=0, dropout=0.5)
    x, lengths = torch.randn(4, 7, 5), torch.tensor([7, 3, 5, 1])
    got = probes.states(model, x, lengths)
    assert set(got) == reps and all(v.shape == (4, 8) for v in got.values())
    again = probes.states(model, x[1:2, :3], lengths[1:2])  # padding after a take's end changes nothing
    np.testing.assert_allclose(again["h_T"][0], got["h_T"][1], atol=1e-5)


def test_mean_input_averages_the_valid_steps_only() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert probes.mean_input(x, torch.tensor([2])).tolist() == [[2.0]]


def test_the_summary_pools_folds_by_takes_and_gives_the_sd_over_runs() -> None:
    rows = pd.DataFrame(
        [
            {
                "backend": "b",
                "variant": "v",
                "representation": "h_T",
                "factor": "pose",
                "run": r,
                "fold": f,
                "accuracy": acc,
                "chance": 0.3,
                "n_takes": n,
            }
            for r, f, acc, n in [(0, 0, 1.0, 30), (0, 1, 0.5, 10), (1, 0, 0.5, 30), (1, 1, 0.5, 10)]
        ]
    )
    s = probes.summarise_probes(rows)["b"]["v"]["h_T"]["pose"]
    assert s["runs"] == 2 and s["accuracy_mean"] == pytest.approx((0.875 + 0.5) / 2, abs=1e-4)
    assert s["accuracy_sd"] == pytest.approx(float(np.std([0.875, 0.5], ddof=1)), abs=1e-4)
    table = probes.probes_table(probes.summarise_probes(rows))
    assert table.loc[0, "probe"] == "b v h_T: pose"
    text = probes.findings(probes.summarise_probes(rows), "b", "v", "w")
    assert text == ["b: pose is read from v's h_T 0.69 (chance 0.30)."]
