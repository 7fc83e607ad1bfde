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
