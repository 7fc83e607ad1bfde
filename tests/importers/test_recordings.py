"""A lab's own recordings: the template's repeats and wildcards, identity labels, the file's frame rate, nothing
invented, the lab's ids, every excluded file with its reason, `mvfer init recordings`' proposal, and the
simulator as an optional branch of dvc.yaml."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.capture.pilot import encode
from pipeline.cli import main as cli_main
from pipeline.dvcyaml import planned, stage_spec
from pipeline.importers import NothingImportedError, run_import
from pipeline.importers.inspect import propose
from pipeline.importers.pattern import compile_template
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.stages import BY_NAME

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = "{subject}/{expression}/{subject}_{expression}_{pose}.mp4"


def _clip(path: Path, fps: int = 30, n: int = 10, size: int = 64) -> None:
    rng = np.random.default_rng(len(str(path)))
    encode([rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)], path, fps)


def _cfg(params: Params, template: str = TEMPLATE, **pattern: object) -> object:
    imp = params.import_
    update = {"template": template, "maps": {"expression": {"happy": "happiness"}}, "frontal": False} | pattern
    p = imp.pattern.model_copy(update=update)
    return imp.model_copy(update={"pattern": p})


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    src = tmp_path / "lab"
    for subject in ("P01", "P02"):
        for word in ("happy", "surprise"):
            for pose in ("left", "right"):
                _clip(src / subject / word / f"{subject}_{word}_{pose}.mp4")
    (src / "P01" / "happy" / "P01_happy_left (1).mp4").write_bytes((src / "P01/happy/P01_happy_left.mp4").read_bytes())
    (src / "P02" / "happy" / "P01_happy_left.mp4").write_bytes(b"filed under the wrong subject")
    (src / "notes.txt").write_text("pilot\n")
    return src


def test_repeats_identity_labels_file_fps_lab_ids_and_exclusions(lab: Path, tmp_path: Path, params: Params) -> None:
    out = tmp_path / "raw"
    report = run_import("recordings", lab, out, _cfg(params), params.rig.expressions)  # type: ignore[arg-type]
    with open(out / "capture_log.csv", newline="") as f:
        rows = {r["take_id"]: r for r in csv.DictReader(f)}
    assert len(rows) == 8 and rows["P01-happy-left"]["subject_id"] == "P01"  # the lab's ids, no prefix
    row = rows["P02-surprise-right"]  # `surprise` needs no map entry: it is an expression name
    assert (row["prompted_expression"], row["pose"], row["fps"]) == ("surprise", "right", "30")  # fps from the file
    assert (row["yaw"], row["pitch"], row["camera"], row["illumination"], row["dataset"]) == (
        "",
        "",
        "unknown",
        "unknown",
        "",
    )
    assert params.import_.fps["pattern"] != 30  # the file's rate, not the parameter's
    excluded = {i["path"]: i["reason_code"] for i in report["excluded_items"]}
    assert excluded == {
        "P01/happy/P01_happy_left (1).mp4": "copy_of_file",
        "P02/happy/P01_happy_left.mp4": "not_in_template",  # the repeated {subject} must hold one value
        "notes.txt": "not_in_template",
    }
    assert report["by_subject"] == {"P01": 4, "P02": 4} and report["frames"] == 80
    with open(out / "subjects.csv", newline="") as f:
        assert [(r["subject_id"], r["consent_research"]) for r in csv.DictReader(f)] == [("P01", ""), ("P02", "")]


def test_wildcards_and_a_sidecar_say_the_pose_nothing_else_does(tmp_path: Path, params: Params) -> None:
    src = tmp_path / "lab"
    _clip(src / "2026-11-02" / "cam" / "S7-fear-take3.mp4")
    (src / "poses.csv").write_text("file,yaw,camera\n2026-11-02/cam/S7-fear-take3.mp4,-30,camL\n")
    cfg = _cfg(params, "**/{subject}-{expression}-*.mp4", sidecar="poses.csv")
    run_import("pattern", src, tmp_path / "raw", cfg, params.rig.expressions)  # type: ignore[arg-type]
    with open(tmp_path / "raw" / "capture_log.csv", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert (row["take_id"], row["subject_id"], row["yaw"], row["pitch"], row["camera"]) == (
        "S7-fear",
        "S7",
        "-30",
        "",
        "camL",
    )


def test_nothing_imported_is_one_line_naming_the_template_key_and_exit_1(
    lab: Path, tmp_path: Path, params: Params, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(params, "{expression}/{subject}.avi")
    with pytest.raises(NothingImportedError, match=r"nothing imported by the recordings layout .*import.pattern.templ"):
        run_import("recordings", lab, tmp_path / "raw", cfg, params.rig.expressions)  # type: ignore[arg-type]
    report = json.loads((tmp_path / "raw" / "import_report.json").read_text())
    assert report["takes"] == 0 and report["excluded"] == 11  # every file listed with its reason


def test_a_label_no_one_mapped_names_the_key_to_edit(tmp_path: Path, params: Params) -> None:
    src = tmp_path / "lab"
    _clip(src / "P01" / "meh" / "P01_meh_left.mp4")
    _clip(src / "P01" / "happy" / "P01_happy_left.mp4")
    report = run_import("recordings", src, tmp_path / "raw", _cfg(params), params.rig.expressions)  # type: ignore[arg-type]
    [item] = report["excluded_items"]
    assert item["reason_code"] == "unknown_label" and "import.pattern.maps.expression" in item["reason"]


def test_templates_repeat_fields_as_one_value() -> None:
    regex, names = compile_template(TEMPLATE)
    assert names == ["subject", "expression", "pose"]
    assert regex.match("P01/happy/P01_happy_left.mp4") and not regex.match("P01/happy/P02_happy_left.mp4")
    assert not regex.match("P01/happy/P01_happy_left (1).mp4")  # a blank never makes a new mode


def test_init_proposes_template_labels_modes_and_bounds(lab: Path) -> None:
    (lab / "P02" / "happy" / "P01_happy_left.mp4").unlink()
    p = propose(lab, ["anger", "happiness", "surprise"], ["frontal", "unknown"])
    assert p.template == TEMPLATE and p.label_map == {"happy": "happiness"}
    assert (p.subjects, p.mode_fields, p.modes, p.fps) == (["P01", "P02"], ["pose"], ["left", "right"], 30.0)
    assert {(w.path, w.code) for w in p.warts} == {
        ("notes.txt", "not_a_video"),
        ("P01/happy/P01_happy_left (1).mp4", "copy_of_file"),
    }
    assert p.bounds["duration_s"][1] >= 10 and all(c.frames == 10 for c in p.clips)


def test_init_reads_key_value_names_and_the_importer_takes_its_template(tmp_path: Path, params: Params) -> None:
    """`sub-P01_exp-happy_view-left.mp4` (BIDS-like keys): the keys stay literal, the values become fields."""
    src = tmp_path / "flat"
    for subject in ("P01", "P02"):
        for word in ("happy", "surprise"):
            for view in ("left", "right"):
                _clip(src / f"sub-{subject}_exp-{word}_view-{view}.mp4")
    p = propose(src, ["anger", "happiness", "surprise"], ["frontal", "unknown"])
    assert p.template == "sub-{subject}_exp-{expression}_view-{pose}.mp4"
    assert (p.subjects, p.modes, p.label_map) == (["P01", "P02"], ["left", "right"], {"happy": "happiness"})
    cfg = _cfg(params, p.template)
    report = run_import("recordings", src, tmp_path / "out", cfg, params.rig.expressions)  # type: ignore[arg-type]
    assert report["takes"] == 8 and report["excluded"] == 0


def test_init_refuses_a_folder_without_videos_in_one_line(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MVFER_ROOT", str(layout.root))  # the test's own project, never this checkout
    before = layout.params_file.read_text()
    (layout.root / "empty").mkdir()
    (layout.root / "empty" / "notes.txt").write_text("no clips yet\n")
    assert cli_main(["init", "recordings", str(layout.root / "empty")]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "no video file" in line and "1 other file(s)" in line and "\n" not in line
    assert layout.params_file.read_text() == before  # nothing written


def test_the_simulator_is_an_optional_branch_of_dvc_yaml() -> None:
    lab = {"source": {"kind": "recordings"}, "qa": {"truth": "", "snapshot": "annotations/no_reannotation.json"}}
    names = [s.name for s in planned(lab)]
    assert not {"capture", "capture_verify", "annotate_sim", "align_accuracy"} & set(names) and "release" in names
    qa = stage_spec(REPO, BY_NAME["qa"], lab)["deps"]
    assert "${qa.truth}" not in qa and "${qa.snapshot}" in qa
    release = stage_spec(REPO, BY_NAME["release"], lab)["deps"]
    assert "reports/align_accuracy.json" not in release and "reports/qa.json" in release
    sim = {"source": {"kind": "simulator"}, "qa": {"truth": "data/raw/_truth/takes.csv"}}
    assert [s.name for s in planned(sim)][:2] == ["capture", "capture_verify"]
    assert "${qa.truth}" in stage_spec(REPO, BY_NAME["qa"], sim)["deps"]


def test_qa_truth_is_optional_and_a_folder_is_one_line(tmp_path: Path) -> None:
    from pipeline.layout import Layout
    from pipeline.qa.stage import TruthError, read_truth

    layout = Layout(tmp_path)
    assert read_truth(layout, "") is None
    (tmp_path / "data").mkdir()
    with pytest.raises(TruthError, match=r"qa.truth 'data' is a folder"):
        read_truth(layout, "data")


def test_release_labels_are_the_names_labels_where_qa_has_none() -> None:
    from pipeline.release.build import with_dataset_labels

    qa = pd.DataFrame(
        {"take_id": ["a", "b"], "label": ["fear", None], "status": ["accepted", "reannotate"]}
        | {c: [None, None] for c in ("confidence", "agreement", "n_annotations", "onset_frame", "apex_frame", "flags")}
    )
    manifest = pd.DataFrame({"take_id": ["a", "b", "c"], "dataset_label": ["anger", "happiness", "sadness"]})
    out = with_dataset_labels(qa, manifest, {"a", "b"})
    assert list(zip(out["take_id"], out["label"], out["source"])) == [
        ("a", "fear", "qa"),
        ("b", "happiness", "dataset_label"),
    ]
    assert with_dataset_labels(qa, manifest.drop(columns="dataset_label"), {"a"}) is qa  # simulator: unchanged


def test_init_writes_params_and_a_consent_skeleton_and_a_rerun_keeps_the_labs_consent(
    lab: Path, layout: Layout
) -> None:
    from pipeline.importers.project import init_recordings, summary
    from pipeline.params import load_params

    (lab / "P02" / "happy" / "P01_happy_left.mp4").unlink()
    first = init_recordings(layout, lab, name="pilot", write_dvc_yaml=False)
    p = load_params(layout.params_file)
    assert (p.source.kind, p.import_.pattern.template, p.ingest.raw_dir) == ("recordings", TEMPLATE, "data/recordings")
    assert (p.qa.truth, p.annotate.gold_truth, p.split.labels, p.release.name) == ("", "", "dataset", "pilot")
    assert "# " in layout.params_file.read_text()  # the file's comments are kept
    sheet = layout.root / "data" / "recordings" / "subjects.csv"
    assert "(P01, P02)" in first.todo[0]
    sheet.write_text(sheet.read_text().replace("P01,,,,", "P01,true,false,false,signed form"))
    again = init_recordings(layout, lab, name="pilot", write_dvc_yaml=False)
    assert "P01,true,false,false,signed form" in sheet.read_text()  # the lab's consent survives a re-run
    assert "(P02)" in again.todo[0]
    text = summary(again, layout.root)
    assert "copy of P01/happy/P01_happy_left.mp4" in text and "notes.txt: not a video" in text


def test_import_that_finds_nothing_exits_1_in_one_line(
    lab: Path, layout: Layout, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MVFER_ROOT", str(layout.root))
    text = layout.params_file.read_text()
    start = text.index("template:", text.index("  pattern:"))
    end = text.index("\n", start)
    layout.params_file.write_text(text[:start] + 'template: "{expression}/{subject}.avi"' + text[end:])
    assert cli_main(["import", "recordings", str(lab), "--out", str(layout.root / "raw")]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "nothing imported" in line and "import.pattern.template" in line and "\n" not in line
