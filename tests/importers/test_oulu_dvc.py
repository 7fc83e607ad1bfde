"""`mvfer import oulu-casia` then `dvc repro` in a temporary clone: the unseen-light protocol ("train
on Strong, test on Weak and Dark") trains and evaluates; a public release of the import is refused. The
clone's data source is not the simulator (`source.kind`), so its stages are neither planned nor run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.capture.simulate import simulate
from pipeline.params import Pose
from tests.checkout import copy_checkout
from tests.conftest import tiny_capture_params
from tests.importers import trees

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]  # the checkout whose tracked files the clone copies
SIMULATOR_STAGES = {"capture", "capture_verify", "annotate_sim", "align_accuracy"}


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MVFER_ROOT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 simulated subjects x 2 expressions laid out as Oulu-CASIA (VL; Strong, Weak, Dark), imported into a clone."""
    base = tmp_path_factory.mktemp("oulu")
    sim, src, dest = base / "sim", base / "Oulu-CASIA", base / "clone"
    simulate(tiny_capture_params(n_subjects=4, poses=[Pose(camera="cam_c", yaw=0, pitch=0)], n_frames=10), sim)
    assert trees.oulu_casia(src, trees.load_sim_takes(sim), defects=False) == 24
    copy_checkout(REPO, dest)
    p = yaml.safe_load((dest / "params.yaml").read_text())
    p["source"] = {"kind": "recordings", "recordings": ""}  # not the simulator: its branch is not planned
    p["import"]["licence"] = {
        "terms": "Oulu-CASIA licence agreement (test)",
        "research_use": True,
        "redistribution": False,
    }
    p["ingest"].update({"raw_dir": "data/imported", "workers": 1, "mode_fields": ["imaging", "light"]})
    p["ingest"]["bounds"]["duration_s"] = [0.2, 600.0]
    p["align"]["workers"] = 1
    p["split"].update(
        {
            "labels": "dataset",
            "val_subjects": 1,
            "min_class_takes": 1,
            "subject_kfold_k": 2,
            "unseen_mode_folds": 2,
            "leave_one_mode_out": False,
            "leave_one_pose_out": False,
            "leave_one_illumination_out": False,
            "seen_modes": ["VL/Strong"],
        }
    )
    # no one has annotated the import yet: an empty export for both rounds (simulated annotations are refused)
    p["qa"].update(
        {
            "snapshot": "annotations/no_reannotation.json",
            "reannotation_snapshot": "annotations/no_reannotation.json",
            "truth": "",  # no simulated truth: nothing upstream of qa renders the simulator
        }
    )
    p["annotate"]["gold_truth"] = ""
    # the unseen-light protocol; a fold trains on 1 subject (4 subjects: 2 tested, 1 for validation), so the
    # training takes are encoded in-sample (features.crossfit_folds 0: out-of-fold encoding needs 2 subjects)
    p["features"].update({"protocol": "unseen_mode", "epochs": 2, "frames_per_take": 4, "crossfit_folds": 0})
    p["train"].update({"variants": ["lstm", "mv_lstm"], "seeds": [0], "epochs": 3, "patience": 2})
    (dest / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run([sys.executable, "-m", "pipeline", "dvc-yaml", "--write"], dest)  # dvc.yaml for this data source
    assert not set(yaml.safe_load((dest / "dvc.yaml").read_text())["stages"]) & SIMULATOR_STAGES
    out = _run(
        [sys.executable, "-m", "pipeline", "import", "oulu-casia", str(src), "--out", "data/imported"], dest
    ).stdout
    assert out.startswith("24 takes of 4 subjects imported")
    _run(["dvc", "repro", "evaluate"], dest)
    assert not set(yaml.safe_load((dest / "dvc.lock").read_text())["stages"]) & SIMULATOR_STAGES  # never run
    return dest


def test_unseen_light_protocol_trains_on_strong_and_tests_on_weak_and_dark(clone: Path) -> None:
    ingest = json.loads((clone / "reports" / "ingest.json").read_text())
    assert ingest["accepted"] == 24 and ingest["accepted_by_mode"] == {"VL/Dark": 8, "VL/Strong": 8, "VL/Weak": 8}
    manifest = pd.read_parquet(clone / "data" / "interim" / "manifest.parquet")
    assert set(manifest["dataset"]) == {"oulu-casia"} and set(manifest["light"]) == {"Strong", "Weak", "Dark"}
    split = json.loads((clone / "data" / "processed" / "splits" / "unseen_mode.json").read_text())
    mode = manifest.set_index("take_id")["mode"]
    for fold in split["folds"]:
        assert set(mode[fold["train"] + fold["val"]]) == {"VL/Strong"}
        assert set(mode[fold["test_unseen"]]) == {"VL/Weak", "VL/Dark"}
    assert "dataset's own labels" in json.loads((clone / "reports" / "splits.json").read_text())["labels"]
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert metrics and (clone / "models" / "unseen_mode").is_dir()


def test_public_release_of_the_import_is_refused(clone: Path) -> None:
    res = _run([sys.executable, "-m", "pipeline", "release", "build"], clone, check=False)
    assert res.returncode == 1
    assert "24 accepted takes come from an imported dataset (oulu-casia)" in res.stderr
    assert not list((clone / "release").glob("*.tar.gz"))
