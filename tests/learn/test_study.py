"""The study's parameter sets (params.study.yaml) are valid parameters and become `dvc exp run --queue` commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _study() -> ModuleType:
    spec = importlib.util.spec_from_file_location("study", ROOT / "scripts" / "study.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_study_experiment_is_valid_and_queued_with_its_settings() -> None:
    study = _study()
    cmds = study.commands(ROOT / "params.study.yaml", ROOT / "tests" / "params.test.yaml")
    names = list(yaml.safe_load((ROOT / "params.study.yaml").read_text())["experiments"])
    assert [c[:6] for c in cmds] == [["dvc", "exp", "run", "--queue", "-n", n] for n in names]
    assert all(a.startswith("++") for a in cmds[0][7::2])  # Hydra's force-set: train.search's keys are new keys
    lopo = dict(a.removeprefix("++").split("=", 1) for a in cmds[0][7::2])
    assert lopo["features.protocol"] == "leave_one_pose_out" and lopo["features.crossfit_folds"] == "2"
    assert lopo["train.search"] == "{lr:[0.0003,0.001,0.003],patience:[10,25]}"
    assert not any(k.startswith("++experiment.") for c in cmds for k in c[7::2])  # the primary test is never changed


def test_a_bad_study_setting_fails_before_anything_is_queued(tmp_path: Path) -> None:
    study = _study()
    bad = tmp_path / "study.yaml"
    bad.write_text(yaml.safe_dump({"experiments": {"x": {"features.crossfit_folds": 2}}}))  # embedding: refused
    with pytest.raises(SystemExit, match="experiment x: .*crossfit_folds needs features.encoding: logits"):
        study.commands(bad, ROOT / "tests" / "params.test.yaml")
    bad.write_text(yaml.safe_dump({"experiments": {"x": {"train.lrr": 0.1}}}))
    with pytest.raises(SystemExit, match="train.lrr is not a parameter"):
        study.commands(bad, ROOT / "tests" / "params.test.yaml")


def test_a_scale_is_laid_over_common_for_every_experiment_and_names_them() -> None:
    from pipeline.learn.study import settings

    study = yaml.safe_load((ROOT / "params.study.yaml").read_text())
    reduced = settings(study, "reduced", ["lopo-crossfit", "frontal-crossfit"])
    assert list(reduced) == ["reduced-lopo-crossfit", "reduced-frontal-crossfit"]
    for sets in reduced.values():  # the same compute for every experiment, every variant
        assert sets["features.seeds"] == study["scales"]["reduced"]["features.seeds"]
        assert sets["train.variants"] == study["common"]["train.variants"]
    assert reduced["reduced-frontal-crossfit"]["features.protocol"] == "unseen_mode"
    cmds = _study().commands(ROOT / "params.study.yaml", ROOT / "tests" / "params.test.yaml", "reduced")
    assert all(c[5].startswith("reduced-") for c in cmds)


def test_an_unknown_scale_or_experiment_is_one_line() -> None:
    from pipeline.learn.study import StudyError, settings

    study = yaml.safe_load((ROOT / "params.study.yaml").read_text())
    with pytest.raises(StudyError, match="no scale 'huge'"):
        settings(study, "huge")
    with pytest.raises(StudyError, match="no experiment 'lopo'"):
        settings(study, None, ["lopo"])


def _metrics(protocol: str, p_values: list[float]) -> dict:
    comps = {
        f"b/v{i}_vs_lstm/unseen_gain": {
            "backend": "b",
            "candidate": f"v{i}",
            "baseline": "lstm",
            "endpoint": "unseen_gain",
            "protocol": protocol,
            "estimate": 0.01,
            "ci95": [-0.01, 0.03],
            "p_value": p,
            "p_holm": min(1.0, p * len(p_values)),
        }
        for i, p in enumerate(p_values)
    }
    return {
        "protocol": protocol,
        "test_sets": ["test_seen", "test_unseen"],
        "primary": {"status": "not run", "reason": "another protocol"},
        "secondary": {"alpha": 0.05, "comparisons": comps},
        "backends": {
            "b": {
                "lstm": {
                    "test_seen_accuracy_mean": 0.7,
                    "test_seen_accuracy_std": 0.01,
                    "test_unseen_accuracy_mean": 0.6,
                    "independent_runs": 4,
                    "drop_accuracy_mean": 0.1,
                }
            }
        },
        "against_truth": {"backends": {"b": {"lstm": {"test_seen": {"accuracy_vs_truth_mean": 0.72}}}}},
        "per_skin_tone_accuracy": {"b": {"lstm": {"test_seen": {"tone0": 0.5, "tone1": 0.9}}}},
        "probes": {"findings": ["b: pose is read ..."], "results": {"b": {}}},
    }


def test_the_study_report_corrects_every_experiments_comparisons_as_one_family() -> None:
    from pipeline.learn.study import collect

    report = collect(
        {
            "a": {"settings": {}, "metrics": _metrics("leave_one_pose_out", [0.01, 0.5])},
            "b": {"settings": {}, "metrics": _metrics("unseen_mode", [0.02])},
            "c": {"settings": {}, "missing": "no DVC experiment of this name"},
        }
    )
    assert report["n_comparisons"] == 3 and report["experiments"]["c"]["missing"].startswith("no DVC")
    by = {(c["experiment"], c["candidate"]): c for c in report["comparisons"]}
    assert by[("a", "v0")]["p_holm_study"] == 0.03 and by[("b", "v0")]["p_holm_study"] == 0.04  # 3 tests, step-down
    assert by[("a", "v0")]["p_holm_experiment"] == 0.02 and by[("a", "v0")]["significant_study"]
    row = report["experiments"]["a"]["variants"][0]
    assert row["test_seen"] == {"mean": 0.7, "sd": 0.01} and row["test_seen_vs_truth"] == 0.72
    assert row["test_seen_skin_tone_range"] == [0.5, 0.9] and row["drop"]["mean"] == 0.1
