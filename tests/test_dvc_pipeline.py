"""`dvc repro` for real, in a temporary clone with a tiny capture: runs, then is a no-op, and a
parameter change reruns only the stages that declare it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import paths

pytestmark = pytest.mark.integration

TINY = {
    "n_subjects": 7, "n_withdrawn": 1, "n_no_public_release": 1,
    "expressions": ["happiness", "surprise"],
    "poses": [{"camera": "cam_c", "yaw": 0.0, "pitch": 0.0}, {"camera": "cam_r30", "yaw": 30.0, "pitch": 0.0}],
    "illuminations": ["frontal", "dim"], "frame_size": 96, "n_frames": 8, "workers": 1,
}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MVFER_ROOT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's files (as git would clone them) in a fresh repository with tiny params."""
    dest = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=paths.ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for f in filter(None, files):
        src = paths.ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    for stale in ("dvc.lock", "data/raw", "data/interim", "reports"):
        shutil.rmtree(dest / stale, ignore_errors=True) if (dest / stale).is_dir() else (dest / stale).unlink(missing_ok=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["capture"].update(TINY)
    params["ingest"]["workers"] = 1
    params["align"]["workers"] = 1
    params["split"].update({"val_subjects": 1, "min_class_takes": 12, "subject_kfold_k": 3, "unseen_mode_folds": 3, "lomo_test_subjects": 2,
                            "seen_modes": ["yaw+0_pitch+0/frontal", "yaw+0_pitch+0/dim"]})
    params["features"].update({"epochs": 2, "frames_per_take": 4})
    params["train"].update({"variants": ["lstm", "mv_lstm"], "seeds": [0], "epochs": 3, "patience": 2})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["dvc", "repro"], dest)
    return dest


def test_repro_builds_the_manifest_and_quarantines_the_withdrawn_subject(clone: Path) -> None:
    align = json.loads((clone / "reports" / "align.json").read_text())
    assert align["takes"] == align["takes_processed"] > 0
    assert (clone / "reports" / "align_accuracy.json").exists()
    report = json.loads((clone / "reports" / "ingest.json").read_text())
    takes = 7 * 2 * 2 * 2
    assert report["log_rows"] == report["files_found"] == report["manifest_rows"] == takes
    assert report["quarantined_by_reason"] == {"consent_withdrawn": takes // 7}
    assert report["accepted"] == takes - takes // 7
    verify = json.loads((clone / "reports" / "capture_verify.json").read_text())
    assert set(verify["illumination"]) == {"frontal", "dim"}
    capture = json.loads((clone / "reports" / "capture.json").read_text())
    assert capture["frames_per_s_per_core"] > 0


def test_repro_splits_trains_and_evaluates(clone: Path) -> None:
    splits = json.loads((clone / "reports" / "splits.json").read_text())
    assert splits["subjects"] == 6 and "QA" in splits["labels"]
    qa = json.loads((clone / "reports" / "qa.json").read_text())
    assert qa["annotations_used"] > 0 and "krippendorff_alpha" in qa["agreement"]
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"lstm", "mv_lstm"}
    for m in metrics["models"].values():
        assert 0 <= m["test_unseen_accuracy_mean"] <= 1 and "per_mode_accuracy" in m
    assert (clone / "models" / "unseen_mode" / "mv_lstm" / "fold0_seed0.pt").exists()
    assert (clone / "reports" / "plots" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    shown = _run(["dvc", "metrics", "show", "--json"], clone).stdout
    assert "test_unseen_accuracy_mean" in shown


def test_second_repro_is_a_no_op(clone: Path) -> None:
    out = _run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out
    assert json.loads(_run(["dvc", "status", "--json"], clone).stdout) == {}


def test_an_ingest_parameter_change_touches_only_ingest(clone: Path) -> None:
    text = (clone / "params.yaml").read_text()
    params = yaml.safe_load(text)
    params["ingest"]["fps_tolerance"] = 0.04
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_run(["dvc", "status", "--json"], clone).stdout)
    (clone / "params.yaml").write_text(text)
    assert set(status) == {"ingest"}


def test_a_rig_folder_and_one_new_take_through_dvc(clone: Path) -> None:
    """A real rig's export folder replaces the simulator by one parameter; one new take, one job."""
    rig = clone / "rig_export"
    shutil.copytree(clone / "data" / "raw", rig, ignore=shutil.ignore_patterns("_truth"))
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["ingest"]["raw_dir"] = "rig_export"
    params["align"]["workers"] = 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["dvc", "repro", "align"], clone)
    first = json.loads((clone / "reports" / "align.json").read_text())
    assert first["takes_processed"] == 0  # same bytes, same parameters: nothing to redo

    import pandas as pd

    log = pd.read_csv(rig / "capture_log.csv")
    accepted = pd.read_parquet(clone / "data" / "interim" / "manifest.parquet").query("status == 'accepted'")
    src = log[log["take_id"] == accepted["take_id"].iloc[0]].iloc[0].copy()
    src_file = rig / src["file"]
    src["take_id"], src["file"] = "pf90000-cam_c", "takes/pf90000-cam_c.mp4"
    (rig / src["file"]).write_bytes(src_file.read_bytes() + b"\0" * 16)
    pd.concat([log, src.to_frame().T]).to_csv(rig / "capture_log.csv", index=False)
    out = _run(["dvc", "repro", "align"], clone).stdout
    assert "Running stage 'capture'" not in out
    second = json.loads((clone / "reports" / "align.json").read_text())
    assert second["takes_processed"] == 1 and second["takes_up_to_date"] == first["takes"]
    assert json.loads(_run(["dvc", "status", "--json", "align"], clone).stdout) == {}
