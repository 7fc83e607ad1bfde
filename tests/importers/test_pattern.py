"""The generic pattern importer: a template with named fields and value maps, without code."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.importers.pattern import TemplateError, compile_template, scan
from pipeline.modes import mode_id, mode_of
from pipeline.params import Params

EXPR = ["anger", "happiness", "sadness"]


def _frames(folder: Path, n: int = 3, ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"f{i:03d}{ext}").write_bytes(b"not decoded by the importer")


def test_template_fields_values_maps_and_exclusions(tmp_path: Path) -> None:
    src = tmp_path / "lab"
    _frames(src / "day1" / "cam_a" / "alice" / "Joy")
    _frames(src / "day1" / "cam_b" / "alice" / "Joy")
    _frames(src / "day2" / "cam_a" / "bob" / "Rage")
    _frames(src / "day2" / "cam_z" / "bob" / "Rage")  # camera not in its map
    _frames(src / "day2" / "cam_a" / "bob" / "Meh")  # label not in its map
    (src / "day2" / "cam_a" / "carol" / "Joy").mkdir(parents=True)  # empty take folder
    (src / "README.txt").write_text("about the lab\n")  # not in the template
    maps = {"expression": {"Joy": "happiness", "Rage": "anger"}, "camera_pos": {"cam_a": "left", "cam_b": "right"}}
    res = scan(src, "{session_day}/{camera_pos}/{subject}/{expression}/{frame}.png", maps, 30.0, EXPR, frontal=False)
    got = {
        t.take_id: (t.subject_id, t.label, t.fields["camera_pos"], t.fields["session_day"], t.yaw) for t in res.takes
    }
    assert got == {
        "pattern-day1-cam_a-alice-Joy": ("pattern-alice", "happiness", "left", "day1", None),
        "pattern-day1-cam_b-alice-Joy": ("pattern-alice", "happiness", "right", "day1", None),
        "pattern-day2-cam_a-bob-Rage": ("pattern-bob", "anger", "left", "day2", None),
    }
    codes = sorted((e.path, e.code) for e in res.excluded)
    assert codes == [
        ("README.txt", "not_in_template"),
        ("day2/cam_a/bob/Meh", "unknown_label"),
        ("day2/cam_a/carol/Joy", "empty_folder"),
        ("day2/cam_z/bob/Rage", "unknown_value"),
    ]


def test_a_template_without_frame_imports_one_video_per_take_and_without_subject_each_take_is_its_own(
    tmp_path: Path,
) -> None:
    src = tmp_path / "clips"
    (src / "Sad").mkdir(parents=True)
    (src / "Sad" / "c1.mp4").write_bytes(b"x")
    res = scan(src, "{expression}/{take}.mp4", {"expression": {"Sad": "sadness"}}, 25.0, EXPR)
    [t] = res.takes
    assert t.source == src / "Sad" / "c1.mp4" and t.subject_id == t.take_id == "pattern-Sad-c1" and t.label == "sadness"


@pytest.mark.parametrize(
    "template, message",
    [
        ("{subject}/{frame}.png", "needs an {expression} field"),
        ("{expression}/{frame}/{subject}.png", "{frame} must begin the last path component"),
        ("{expression}/{frame}/{frame}.png", "{frame} may appear only once"),
    ],
)
def test_bad_templates_say_what_is_wrong(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        compile_template(template)


def test_mode_fields_default_gives_the_old_names_and_others_give_their_values() -> None:
    for y, p, i in [(0.0, 0.0, "frontal"), (-30.0, 0.0, "dim"), (30.0, 10.0, "left")]:
        assert mode_of({"yaw": y, "pitch": p, "illumination": i}) == mode_id(y, p, i)
    assert mode_of({"imaging": "NI", "light": "Dark", "yaw": 0.0}, ["imaging", "light"]) == "NI/Dark"
    assert mode_of({"yaw": None, "pitch": "", "illumination": "unknown"}) == "unknown_pose/unknown"
    assert mode_of({"light": ""}, ["light"]) == "unknown"


def test_a_missing_layout_key_is_named_by_the_importer_that_needs_it(
    tmp_path: Path, params: Params, sim_takes: list
) -> None:
    """params.yaml keeps no second list of layouts: the importer run names the key it lacks, in one line."""
    from pipeline.importers import run_import
    from pipeline.importers.common import DatasetImportError
    from tests.importers import trees

    src = tmp_path / "ck"
    trees.ckplus(src, sim_takes)
    imp = params.import_
    no_map = imp.model_copy(update={"label_maps": {k: v for k, v in imp.label_maps.items() if k != "ckplus"}})
    with pytest.raises(DatasetImportError, match=r"^params.yaml: import.label_maps.ckplus is missing"):
        run_import("ckplus", src, tmp_path / "out", no_map, params.rig.expressions)
    no_fps = imp.model_copy(update={"fps": {k: v for k, v in imp.fps.items() if k != "dfew"}})
    with pytest.raises(DatasetImportError, match=r"^params.yaml: import.fps.dfew is missing"):
        run_import("dfew", src, tmp_path / "out2", no_fps, params.rig.expressions)


def test_fields_named_like_log_columns_fill_those_columns(tmp_path: Path) -> None:
    import csv

    from pipeline.importers.common import write_rig

    src = tmp_path / "lab"
    _frames(src / "s2" / "camL" / "yaw-30" / "dana" / "Rage")
    maps = {"expression": {"Rage": "anger"}, "yaw": {"yaw-30": "-30"}}
    res = scan(src, "{session}/{camera}/{yaw}/{subject}/{expression}/{frame}.png", maps, 30.0, EXPR, frontal=False)
    write_rig(res, src, tmp_path / "raw", copy=False, licence_terms="", research_use=False, redistribution=False)
    with open(tmp_path / "raw" / "capture_log.csv") as f:
        [row] = list(csv.DictReader(f))
    assert (row["session"], row["camera"], row["yaw"], row["pitch"], row["subject_id"]) == (
        "s2",
        "camL",
        "-30",
        "",
        "pattern-dana",
    )


def test_videos_the_fields_do_not_tell_apart_are_listed_not_dropped(tmp_path: Path) -> None:
    """A wildcard is not a field: a second file with the same field values is listed, never silently lost."""
    src = tmp_path / "lab"
    (src / "P01" / "happy").mkdir(parents=True)
    for name in ("P01_happy_left.mp4", "P01_happy_left_take2.mp4", "P01_happy_right.mp4"):
        (src / "P01" / "happy" / name).write_bytes(b"x")
    res = scan(src, "{subject}/{expression}/*.mp4", {"expression": {"happy": "happiness"}}, 25.0, EXPR, prefix="")
    [t] = res.takes
    assert t.source == src / "P01" / "happy" / "P01_happy_left.mp4"
    assert sorted((e.path, e.code) for e in res.excluded) == [
        ("P01/happy/P01_happy_left_take2.mp4", "same_fields_as"),
        ("P01/happy/P01_happy_right.mp4", "same_fields_as"),
    ]
    assert all("P01/happy/P01_happy_left.mp4" in e.reason and "add a field" in e.reason for e in res.excluded)


def test_a_second_frame_folder_with_the_same_fields_is_listed_not_merged(tmp_path: Path) -> None:
    src = tmp_path / "lab"
    _frames(src / "alice" / "Joy" / "cam_a")
    _frames(src / "alice" / "Joy" / "cam_b")
    res = scan(src, "{subject}/{expression}/*/{frame}.png", {"expression": {"Joy": "happiness"}}, 30.0, EXPR)
    [t] = res.takes
    assert t.source == src / "alice" / "Joy" / "cam_a"
    [e] = res.excluded
    assert (e.path, e.code) == ("alice/Joy/cam_b", "same_fields_as") and "alice/Joy/cam_a" in e.reason


@pytest.mark.parametrize(
    "template, what",
    [
        ("{subject}/{expression}/{subject}_{expression}_{pose}*.mp4", "{pose} is directly followed by '*'"),
        ("{subject}/{expression}/{subject}_{expression}{pose}.mp4", "{expression} is directly followed by {pose}"),
        ("{subject}**/{expression}.mp4", "{subject} is directly followed by '*'"),
    ],
)
def test_a_field_directly_followed_by_a_wildcard_or_a_field_is_refused(template: str, what: str) -> None:
    """Fields match as little as they can: `{pose}*` would read pose `l` from `left`; refused in one line."""
    with pytest.raises(TemplateError) as e:
        compile_template(template)
    message = str(e.value)
    assert "\n" not in message and "import.pattern.template" in message and what in message


def test_a_field_only_some_takes_have_never_blanks_the_others(tmp_path: Path) -> None:
    """A yaw one name lacks as a number, or a camera the sidecar gives for one file, touches that take only."""
    import csv

    from pipeline.importers.common import write_rig

    src = tmp_path / "lab"
    (src / "P01" / "happy").mkdir(parents=True)
    for name in ("30.mp4", "-30.mp4", "left.mp4"):
        (src / "P01" / "happy" / name).write_bytes(b"x")
    (src / "side.csv").write_text("file,camera\nP01/happy/30.mp4,camL\n")
    maps = {"expression": {"happy": "happiness"}}
    res = scan(src, "{subject}/{expression}/{yaw}.mp4", maps, 25.0, EXPR, prefix="", sidecar="side.csv")
    write_rig(res, src, tmp_path / "raw", copy=False, licence_terms="", research_use=False, redistribution=False)
    with open(tmp_path / "raw" / "capture_log.csv", newline="") as f:
        rows = {r["source_path"]: (r["yaw"], r["camera"]) for r in csv.DictReader(f)}
    assert rows == {
        "P01/happy/30.mp4": ("30", "camL"),
        "P01/happy/-30.mp4": ("-30", "unknown"),
        "P01/happy/left.mp4": ("left", "unknown"),  # not a number: kept as written, ingest quarantines this take
    }
