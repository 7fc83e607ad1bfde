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
    lopo = dict(a.split("=", 1) for a in cmds[0][7::2])
    assert lopo["features.protocol"] == "leave_one_pose_out" and lopo["features.crossfit_folds"] == "2"
    assert lopo["train.search"] == "{lr:[0.0003,0.001,0.003],patience:[10,25]}"
    assert not any(k.startswith("experiment.") for c in cmds for k in c[7::2])  # the primary test is never changed


def test_a_bad_study_setting_fails_before_anything_is_queued(tmp_path: Path) -> None:
    study = _study()
    bad = tmp_path / "study.yaml"
    bad.write_text(yaml.safe_dump({"experiments": {"x": {"features.crossfit_folds": 2}}}))  # embedding: refused
    with pytest.raises(Exception, match="crossfit_folds needs features.encoding: logits"):
        study.commands(bad, ROOT / "tests" / "params.test.yaml")
    bad.write_text(yaml.safe_dump({"experiments": {"x": {"train.lrr": 0.1}}}))
    with pytest.raises(SystemExit, match="train.lrr is not a parameter"):
        study.commands(bad, ROOT / "tests" / "params.test.yaml")
