"""Issue 21's walk-through, for real: a lab's pilot folder (3 subjects x 6 expressions x 2 poses, 36 H.264 clips
at 30 fps named `P01/happy/P01_happy_left.mp4`, with a truncated clip, a 30-second clip, two text files and a
copy whose name has a blank) goes from `mvfer init recordings` and a filled consent sheet through `dvc repro`
to a verified release, in a temporary clone: no traceback, the simulator never planned nor run, every wart
reported with its reason, a metrics report of the lab's own data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.capture import pilot
from tests.checkout import copy_checkout

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SIMULATOR_STAGES = {"capture", "capture_verify", "annotate_sim", "align_accuracy"}


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MVFER_ROOT"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["MVFER_MV_SCAN"] = "python"  # never wait on a compiler in a test (the scan's result is the same)
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def _smaller_training(clone: Path) -> None:
    """The test's only edit beyond consent: fewer epochs, seeds and variants, so it runs in minutes."""
    p = pilot.reduced_training(yaml.safe_load((clone / "params.yaml").read_text()))
    (clone / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Pilot folder -> `mvfer init recordings` -> consent filled -> `dvc repro` -> `mvfer release verify`."""
    base = tmp_path_factory.mktemp("pilot")
    lab = pilot.make_pilot(base / "Pilot Study" / "videos", base / "work")
    clone = copy_checkout(REPO, base / "clone")
    _run(["git", "init", "-q"], clone)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    init = _run([sys.executable, "-m", "pipeline", "init", "recordings", str(lab), "--creator", "Test lab"], clone)
    times["init"] = time.perf_counter() - t0
    dvc_yaml = (clone / "dvc.yaml").read_text()
    dag = _run(["dvc", "dag", "--dot"], clone)
    (clone / "data" / "recordings" / "subjects.csv").write_text(pilot.CONSENT)
    _smaller_training(clone)
    t0 = time.perf_counter()
    repro = _run(["dvc", "repro"], clone)
    times["repro"] = time.perf_counter() - t0
    release = json.loads((clone / "reports" / "release.json").read_text())
    verify = _run([sys.executable, "-m", "pipeline", "release", "verify", str(clone / release["archive"])], clone)
    return {
        "clone": clone,
        "lab": lab,
        "init": init,
        "dvc_yaml": dvc_yaml,
        "dag": dag,
        "repro": repro,
        "verify": verify,
        "release": release,
        "times": times,
    }


def test_init_says_what_it_decided_and_what_is_left_to_fill_in(walk: dict) -> None:
    out = walk["init"].stdout
    assert "template   {subject}/{expression}/{subject}_{expression}_{pose}.mp4" in out
    assert "angry -> anger" in out and "happy -> happiness" in out and "surprise ->" not in out  # identity needs none
    assert "subjects   3: P01, P02, P03" in out and "modes      left, right" in out
    assert "at 30 fps" in out and "release videos (CC-BY-NC-4.0)" in out
    assert "consent: fill consent_research" in out and "(P01, P02, P03)" in out
    params = yaml.safe_load((walk["clone"] / "params.yaml").read_text())  # after the test's own edits: init's stand
    assert params["source"] == {"kind": "recordings", "recordings": str(walk["lab"].resolve())}
    assert params["qa"]["truth"] == "" and params["annotate"]["gold_truth"] == ""
    assert params["ingest"]["mode_fields"] == ["pose"] and params["split"]["labels"] == "dataset"
    assert "Traceback" not in walk["init"].stderr


def test_the_simulator_is_never_planned_nor_run(walk: dict) -> None:
    stages = set(yaml.safe_load(walk["dvc_yaml"])["stages"])
    assert not stages & SIMULATOR_STAGES and {"ingest", "qa", "split", "evaluate", "release"} <= stages
    assert "_truth" not in walk["dvc_yaml"] and "data/raw" not in walk["dvc_yaml"]
    assert "capture" not in walk["dag"].stdout and "release" in walk["dag"].stdout  # planned before any run
    lock = yaml.safe_load((walk["clone"] / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"ingest", "align", "media", "qa", "split", "features", "train", "evaluate", "release"}
    assert not (walk["clone"] / "data" / "raw").exists()
    assert not (walk["clone"] / "reports" / "capture.json").exists()
    for res in (walk["repro"], walk["verify"]):
        assert "Traceback" not in res.stdout + res.stderr


def test_every_wart_is_reported_with_its_reason(walk: dict) -> None:
    clone = walk["clone"]
    imp = json.loads((clone / "data" / "recordings" / "import_report.json").read_text())
    excluded = {i["path"]: i["reason_code"] for i in imp["excluded_items"]}
    texts = {t: "not_in_template" for t in pilot.TEXTS}
    assert excluded == texts | {pilot.COPY: "copy_of_file"}
    ingest = json.loads((clone / "reports" / "ingest.json").read_text())
    quarantined = {q["source_path"]: (q["reason_code"], q["reason"]) for q in ingest["quarantined_items"]}
    assert set(quarantined) == {pilot.TRUNCATED, pilot.LONG}
    assert quarantined[pilot.TRUNCATED][0] == "truncated" and "declares" in quarantined[pilot.TRUNCATED][1]
    assert quarantined[pilot.LONG][0] == "out_of_bounds" and "duration_s = 30" in quarantined[pilot.LONG][1]
    assert ingest["accepted"] == pilot.CLIPS - 2 and ingest["accepted_by_mode"] == {"left": 17, "right": 17}
    manifest = pd.read_parquet(clone / "data" / "interim" / "manifest.parquet")
    assert set(manifest["subject_id"]) == {"P01", "P02", "P03"}  # the lab's ids: its consent sheet works as is
    accepted = manifest[manifest["status"] == "accepted"]
    assert set(accepted["file_fps"]) == {30.0} == set(accepted["fps"])  # the log's rate is the file's
    assert manifest["yaw"].isna().all() and set(manifest["camera"]) == {"unknown"}  # never invented


def test_a_metrics_report_of_the_labs_own_data(walk: dict) -> None:
    clone = walk["clone"]
    splits = json.loads((clone / "reports" / "splits.json").read_text())
    assert splits["subjects"] == 3 and splits["modes"] == ["left", "right"]
    assert "dataset's own labels" in splits["labels"]
    metrics = json.loads((clone / "reports" / "metrics.json").read_text())
    assert metrics["protocol"] == "unseen_mode" and set(metrics["classes"]) <= set(pilot.WORDS)
    predictions = pd.read_csv(clone / "reports" / "predictions.csv")
    assert set(predictions["take_id"].str[:3]) <= {"P01", "P02", "P03"}


def test_the_release_is_the_labs_and_verifies(walk: dict) -> None:
    clone, release = walk["clone"], walk["release"]
    assert release["name"] == "videos-0.1.0" and release["data_source"] == "rig"
    assert "OK" in walk["verify"].stdout + walk["verify"].stderr
    folder = clone / "release" / release["name"]
    takes = pd.read_csv(folder / "metadata" / "takes.csv")
    assert set(takes["subject"]) == {"P01", "P02"}  # P03 consented to research only
    with open(folder / "metadata" / "labels.csv", newline="") as f:
        labels = list(csv.DictReader(f))
    assert len(labels) == len(takes) and {r["source"] for r in labels} == {"dataset_label"}
    named = {t: t.split("-")[1] for t in takes["take_id"]}
    words = {v: k for k, v in pilot.WORDS.items()}
    assert all(r["label"] == words[named[r["take_id"]]] for r in labels)  # the names' labels, released as labels
    assert "Test lab" in (folder / "README.md").read_text() + (folder / "croissant.json").read_text()
    assert "Attribution-NonCommercial" in (folder / "LICENSE").read_text()
    sheet = (folder / "DATASHEET.md").read_text()
    assert "Recorded by the lab's capture rig" in sheet and f"names: {len(takes)} takes carry" in sheet
    assert "Annotation: none yet" in sheet and "simulator" not in sheet.lower()


def test_measured_times(walk: dict) -> None:
    """The walk-through's times on this machine, written beside the reports (quoted in docs/recordings.md)."""
    times = walk["times"]
    (walk["clone"] / "reports" / "pilot_times.json").write_text(json.dumps(times))
    assert times["init"] < 120 and times["repro"] < 1200
