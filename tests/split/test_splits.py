"""Split protocols are subject-independent and mode-correct; each planted leak is caught."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.split import stage as split
from pipeline.split.leakage import SplitIncompleteError, SplitLeakageError, check_protocol, incomplete
from pipeline.split.protocols import (
    SplitError,
    drop_incomplete,
    incomplete_subjects,
    leave_one_factor_out,
    leave_one_mode_out,
    subject_groups,
    subject_kfold,
    unseen_mode,
)
from pipeline.stage import EXIT_ENVIRONMENT, EXIT_INPUT, invoke

CLASSES = ["anger", "fear", "happiness"]
MODES = ["yaw+0_pitch+0/frontal", "yaw+0_pitch+0/dim", "yaw+30_pitch+0/frontal", "yaw+30_pitch+0/dim"]
SEEN = MODES[:2]
POSES = ["yaw-30_pitch+0", "yaw+0_pitch+0", "yaw+30_pitch+0"]
LIGHTS = ["frontal", "left", "dim"]
PARTS = ["pose", "illumination"]


@pytest.fixture(scope="module")
def takes() -> pd.DataFrame:
    rows = [
        {"take_id": f"{s}-{m}-{c}", "subject_id": s, "mode": m, "label": c}
        for s in [f"sub-{i:02d}" for i in range(9)]
        for m in MODES
        for c in CLASSES
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def hashes(takes: pd.DataFrame) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {t: rng.integers(0, 2, 256).astype(bool) for t in takes["take_id"]}


def _subjects(takes: pd.DataFrame, ids: list[str]) -> set[str]:
    return set(takes.set_index("take_id").loc[ids, "subject_id"])


def test_groups_partition_the_subjects(takes: pd.DataFrame) -> None:
    groups = subject_groups(takes, 3, seed=0)
    flat = [s for g in groups for s in g]
    assert sorted(flat) == sorted(takes["subject_id"].unique()) and [len(g) for g in groups] == [3, 3, 3]
    with pytest.raises(ValueError, match="cannot make 10 subject folds from 9 subjects"):
        subject_groups(takes, 10, seed=0)


def test_subject_kfold_is_subject_independent_and_covers_everyone_once(takes: pd.DataFrame) -> None:
    split = subject_kfold(takes, 3, val_subjects=1, seed=0)
    tested = []
    for fold in split["folds"]:
        tr, va, te = (_subjects(takes, fold[k]) for k in ("train", "val", "test"))
        assert not (tr & va) and not (tr & te) and not (va & te)
        tested += sorted(te)
    assert sorted(tested) == sorted(takes["subject_id"].unique())
    assert check_protocol(split, takes, CLASSES, {}, 4) == []


def test_unseen_mode_trains_on_seen_modes_only(takes: pd.DataFrame) -> None:
    split = unseen_mode(takes, SEEN, 3, val_subjects=1, seed=0)
    t = takes.set_index("take_id")
    for fold in split["folds"]:
        assert set(t.loc[fold["train"] + fold["val"] + fold["test_seen"], "mode"]) == set(SEEN)
        assert set(t.loc[fold["test_unseen"], "mode"]) == set(MODES[2:])
        assert _subjects(takes, fold["test_seen"]) == _subjects(takes, fold["test_unseen"])
    assert check_protocol(split, takes, CLASSES, {}, 4) == []


def test_unseen_mode_rejects_unknown_or_all_modes(takes: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="not in the data"):
        unseen_mode(takes, ["yaw+90_pitch+0/frontal"], 3, 1, 0)
    with pytest.raises(ValueError, match="nothing is left"):
        unseen_mode(takes, MODES, 3, 1, 0)
    with pytest.raises(SplitError, match=r"\(split.unseen_mode_folds is 12; set it between 2 and 9\)$"):
        unseen_mode(takes, SEEN, 12, 1, 0)


def test_leave_one_mode_out_has_a_fold_per_mode(takes: pd.DataFrame) -> None:
    split = leave_one_mode_out(takes, test_subjects=3, val_subjects=1, seed=0)
    assert sorted(f["held_out_mode"] for f in split["folds"]) == sorted(MODES)
    assert check_protocol(split, takes, CLASSES, {}, 4) == []


@pytest.fixture
def clean(takes: pd.DataFrame) -> dict:
    return unseen_mode(takes, SEEN, 3, val_subjects=1, seed=0)


def test_planted_subject_leak_is_caught(clean: dict, takes: pd.DataFrame) -> None:
    split = copy.deepcopy(clean)
    fold = split["folds"][0]
    fold["train"].append(fold["test_seen"][0])
    problems = check_protocol(split, takes, CLASSES, {}, 4)
    assert any("unseen_mode fold 0: subject" in p and "'train'" in p and "'test_seen'" in p for p in problems), problems


def test_planted_unseen_mode_in_training_is_caught(clean: dict, takes: pd.DataFrame) -> None:
    split = copy.deepcopy(clean)
    fold = split["folds"][1]
    train_subject = _subjects(takes, fold["train"]).pop()
    leak = takes[(takes["subject_id"] == train_subject) & (takes["mode"] == MODES[3])]["take_id"].iloc[0]
    fold["train"].append(leak)
    problems = check_protocol(split, takes, CLASSES, {}, 4)
    assert problems == [f"unseen_mode fold 1: unseen mode(s) {MODES[3]} appear in 'train'"]


def test_planted_near_duplicate_across_splits_is_caught(clean: dict, takes: pd.DataFrame, hashes: dict) -> None:
    fold = clean["folds"][2]
    planted = dict(hashes)
    copy_of = fold["train"][0]
    victim = fold["test_unseen"][0]
    noisy = planted[copy_of].copy()
    noisy[:3] = ~noisy[:3]  # 3 bits of 256 differ: a re-encoded copy
    planted[victim] = noisy
    problems = check_protocol(clean, takes, CLASSES, planted, 4)
    assert len(problems) == 1 and copy_of in problems[0] and victim in problems[0] and "3 of 256" in problems[0]
    assert check_protocol(clean, takes, CLASSES, hashes, 4) == []


def test_planted_empty_class_is_incomplete_not_a_leak(clean: dict, takes: pd.DataFrame) -> None:
    split = copy.deepcopy(clean)
    fold = split["folds"][0]
    t = takes.set_index("take_id")
    fold["val"] = [x for x in fold["val"] if t.loc[x, "label"] != "fear"]
    assert check_protocol(split, takes, CLASSES, {}, 4) == []
    assert incomplete(split, takes, CLASSES) == ["unseen_mode fold 0: split 'val' has no take of class(es) fear"]


def _stage_params(params: Params) -> Params:
    """The fixture's takes: prompted labels, no rare classes, three subject folds, this module's seen modes."""
    return params.model_copy(
        update={
            "split": params.split.model_copy(
                update={
                    "labels": "prompted",
                    "min_class_takes": 1,
                    "subject_kfold_k": 3,
                    "val_subjects": 1,
                    "seen_modes": SEEN,
                    "unseen_mode_folds": 3,
                    "leave_one_mode_out": False,
                    "leave_one_pose_out": False,
                    "leave_one_illumination_out": False,
                    "near_duplicate_max_bits": 4,
                }
            )
        }
    )


@pytest.fixture(scope="module")
def file_takes(takes: pd.DataFrame) -> pd.DataFrame:
    """The takes with ids that name files (no '/')."""
    return takes.assign(take_id=takes["take_id"].str.replace("/", "_"))


def _inputs(layout: Layout, takes: pd.DataFrame, same_frames: bool = False) -> None:
    """manifest, align verdicts and aligned takes of `takes` (same_frames: every take duplicates every other)."""
    layout.interim.mkdir(parents=True)
    layout.aligned.mkdir(parents=True)
    takes.assign(status="accepted", prompted_expression=takes["label"]).drop(columns="label").to_parquet(
        layout.manifest
    )
    takes[["take_id"]].assign(status="ok").to_parquet(layout.align_takes)
    rng = np.random.default_rng(0)
    same = rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    for t in takes["take_id"]:
        frames = same if same_frames else rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
        np.savez(layout.aligned / f"{t}.npz", frames=frames, valid=np.ones(3, bool))


def test_split_stage_writes_the_protocols_and_a_report_with_provenance(
    layout: Layout, params: Params, file_takes: pd.DataFrame
) -> None:
    _inputs(layout, file_takes)
    split.run(layout, _stage_params(params))
    assert sorted(p.name for p in layout.splits.iterdir()) == [
        "subject_kfold.json",
        "takes.parquet",
        "unseen_mode.json",
    ]
    assert list(pd.read_parquet(layout.splits / "takes.parquet")["take_id"]) == sorted(file_takes["take_id"])
    unseen = json.loads((layout.splits / "unseen_mode.json").read_text())
    assert unseen["classes"] == CLASSES and unseen["labels"] == "prompted expressions (split.labels: prompted)"
    rep = json.loads(layout.splits_report.read_text())
    assert rep["eligible_takes"] == len(file_takes) and set(rep["protocols"]) == {"subject_kfold", "unseen_mode"}
    assert rep["provenance"]["params"]["split"]["seen_modes"] == SEEN


def test_split_stage_fails_with_a_clear_message(layout: Layout, params: Params, file_takes: pd.DataFrame) -> None:
    """Planted near-duplicates across subjects: SplitLeakageError listing the leaks (the CLI prints it as one error),
    nothing written."""
    _inputs(layout, file_takes, same_frames=True)
    with pytest.raises(
        SplitLeakageError, match=r"leak\(s\) in the splits:\n  subject_kfold fold 0: take .* are near-duplicates"
    ):
        split.run(layout, _stage_params(params))
    assert not layout.splits.exists() and not layout.splits_report.exists()


def test_the_core_names_every_leak_of_planted_hashes(takes: pd.DataFrame, params: Params, hashes: dict) -> None:
    s = _stage_params(params).split
    assert set(split.compute(takes, {}, hashes, s).protocols) == {"subject_kfold", "unseen_mode"}
    clone = dict.fromkeys(hashes, hashes[takes["take_id"].iloc[0]])
    with pytest.raises(SplitLeakageError, match="unseen_mode fold 2: take"):
        split.compute(takes, {}, clone, s)


def test_a_damaged_aligned_take_is_one_line_naming_file_and_field(
    layout: Layout, params: Params, file_takes: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    _inputs(layout, file_takes)
    victim = layout.aligned / f"{file_takes['take_id'].iloc[5]}.npz"
    np.savez(victim, frames=np.zeros((3, 16, 16, 3), np.uint8))  # no `valid`
    assert invoke(split.run, layout, _stage_params(params)) == EXIT_INPUT
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"{victim}: aligned take has no field 'valid' (rerun align)"]
    assert not layout.splits.exists()


def test_an_output_that_cannot_be_written_stops_the_stage_as_an_environment_fault(
    layout: Layout, params: Params, file_takes: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    _inputs(layout, file_takes)
    layout.processed.write_text("")  # a file where data/processed must be: no output can be created
    assert invoke(split.run, layout, _stage_params(params)) == EXIT_ENVIRONMENT
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert (
        len(errors) == 1
        and errors[0].startswith(f"environment: cannot write {layout.splits}")
        and "\n" not in errors[0]
    )
    assert not layout.splits_report.exists()


def test_rare_labels_are_left_out_and_counted() -> None:
    from pipeline.split.stage import eligible_takes

    manifest = pd.DataFrame(
        {
            "take_id": [f"t{i}" for i in range(8)],
            "status": ["accepted"] * 7 + ["quarantined"],
            "subject_id": "s1",
            "yaw": 0.0,
            "pitch": 0.0,
            "illumination": "frontal",
            "mode": "yaw+0_pitch+0/frontal",
            "prompted_expression": "fear",
        }
    )
    align = pd.DataFrame({"take_id": [f"t{i}" for i in range(8)], "status": ["ok"] * 6 + ["flagged", "ok"]})
    labels = pd.DataFrame(
        {
            "take_id": [f"t{i}" for i in range(6)],
            "status": ["accepted"] * 5 + ["reannotate"],
            "label": ["fear", "fear", "fear", "anger", "fear", "fear"],
        }
    )
    takes, excluded = eligible_takes(manifest, align, labels, min_class_takes=2)
    assert list(takes["take_id"]) == ["t0", "t1", "t2", "t4"]
    assert excluded == {
        "not_accepted_by_ingest": 1,
        "flagged_by_align": 1,
        "no_accepted_label": 1,
        "rare_class": 1,
        "rare_classes": ["anger"],
    }


def test_a_manifest_without_ingests_mode_asks_for_a_re_ingest_instead_of_guessing() -> None:
    from pipeline.modes import MissingModeError
    from pipeline.split.stage import eligible_takes

    manifest = pd.DataFrame(
        {
            "take_id": ["t0"],
            "status": ["accepted"],
            "subject_id": "s1",
            "yaw": 0.0,
            "pitch": 0.0,
            "illumination": "frontal",
            "prompted_expression": "fear",
        }
    )
    with pytest.raises(MissingModeError, match="no column 'mode'.*re-run ingest"):
        eligible_takes(manifest, pd.DataFrame({"take_id": ["t0"], "status": ["ok"]}), None)


def test_no_eligible_take_is_one_line_naming_what_left_them_out(layout: Layout, params: Params) -> None:
    """Too few takes per class (a small rig folder): the CLI's one-line error, not a traceback from the protocols."""
    from pipeline.errors import PipelineError

    manifest = pd.DataFrame(
        {
            "take_id": ["t0", "t1"],
            "status": "accepted",
            "subject_id": ["s1", "s2"],
            "mode": "m",
            "prompted_expression": "fear",
        }
    )
    layout.interim.mkdir(parents=True)
    manifest.to_parquet(layout.manifest)
    pd.DataFrame({"take_id": ["t0", "t1"], "status": "ok"}).to_parquet(layout.align_takes)
    params = params.model_copy(
        update={"split": params.split.model_copy(update={"labels": "prompted", "min_class_takes": 3})}
    )
    with pytest.raises(
        PipelineError, match=r"manifest.parquet: no take is eligible .*rare_class 2.*min_class_takes is 3"
    ) as e:
        split.run(layout, params)
    assert "\n" not in str(e.value) and not layout.splits_report.exists()


def test_protocol_errors_are_pipeline_errors(takes: pd.DataFrame) -> None:
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="cannot make 20 subject folds from 9 subjects"):
        subject_groups(takes, 20, 0)


@pytest.fixture(scope="module")
def rig_takes() -> pd.DataFrame:
    """9 subjects x 3 poses x 3 lights x 3 classes, one take each: the simulator's rig in small."""
    rows = [
        {"take_id": f"{s}-{p}-{li}-{c}", "subject_id": s, "mode": f"{p}/{li}", "label": c}
        for s in [f"sub-{i:02d}" for i in range(9)]
        for p in POSES
        for li in LIGHTS
        for c in CLASSES
    ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("factor", "values", "part"), [("pose", POSES, 0), ("illumination", LIGHTS, 1)])
def test_leave_one_factor_out_trains_on_the_other_values_which_vary(
    rig_takes: pd.DataFrame, factor: str, values: list[str], part: int
) -> None:
    split = leave_one_factor_out(rig_takes, factor, PARTS, 3, val_subjects=2, seed=0)
    t = rig_takes.set_index("take_id")
    value = t["mode"].str.split("/").str[part]
    other = t["mode"].str.split("/").str[1 - part]
    assert split["protocol"] == f"leave_one_{factor}_out" and len(split["folds"]) == 3
    assert sorted(f["held_out"] for f in split["folds"]) == sorted(values)  # every value held out once
    tested = sorted(s for f in split["folds"] for s in f["subjects"]["test"])
    assert tested == sorted(rig_takes["subject_id"].unique())  # every subject tested once
    for f in split["folds"]:
        trained = set(value.loc[f["train"]])
        assert f["held_out"] not in trained and len(trained) == 2  # the held-out factor varies in training
        assert set(other.loc[f["train"]]) == set(LIGHTS if factor == "pose" else POSES)  # under every other value
        assert set(value.loc[f["test_unseen"]]) == {f["held_out"]} and set(value.loc[f["test_seen"]]) == trained
        assert set(value.loc[f["val"]]) == trained and len(f["subjects"]["val"]) == 2
        assert (
            _subjects(rig_takes, f["test_seen"]) == _subjects(rig_takes, f["test_unseen"]) == set(f["subjects"]["test"])
        )
        assert set(f["unseen_modes"]) == set(t.loc[f["test_unseen"], "mode"])
        assert set(f["seen_modes"]).isdisjoint(f["unseen_modes"])
    assert check_protocol(split, rig_takes, CLASSES, {}, 4) == [] and incomplete(split, rig_takes, CLASSES) == []


def test_crossed_rotation_pairs_every_value_with_every_subject_group(rig_takes: pd.DataFrame) -> None:
    split = leave_one_factor_out(rig_takes, "pose", PARTS, 3, 1, 0, rotation="crossed")
    pairs = {(f["held_out"], tuple(f["subjects"]["test"])) for f in split["folds"]}
    assert len(split["folds"]) == 9 and len(pairs) == 9


def test_a_factor_protocol_the_data_cannot_fill_refuses_in_one_line(rig_takes: pd.DataFrame) -> None:
    two_poses = rig_takes[~rig_takes["mode"].str.startswith("yaw-30")]
    with pytest.raises(SplitError, match=r"^split.leave_one_pose_out: the data has 2 pose value\(s\).*at least 3") as e:
        leave_one_factor_out(two_poses, "pose", PARTS, 3, 1, 0)
    assert "\n" not in str(e.value)
    with pytest.raises(SplitError, match=r"factor_subject_groups is 12; set it between 2 and 9\)$"):
        leave_one_factor_out(rig_takes, "pose", PARTS, 12, 1, 0)
    with pytest.raises(SplitError, match=r"split.mode_parts \(camera\) names no part 'pose'"):
        leave_one_factor_out(rig_takes, "pose", ["camera"], 3, 1, 0)
    with pytest.raises(SplitError, match=r"puts 'illumination' at part 3 but mode .* has 2 part"):
        leave_one_factor_out(rig_takes, "illumination", ["pose", "camera", "illumination"], 3, 1, 0)


def test_too_many_lomo_test_subjects_is_one_line_naming_the_value_that_works(takes: pd.DataFrame) -> None:
    with pytest.raises(
        SplitError, match=r"^split.lomo_test_subjects is 20 but the data has 9 subjects: set it to at most 7"
    ):
        leave_one_mode_out(takes, test_subjects=20, val_subjects=1, seed=0)
    three = takes[takes["subject_id"].isin(["sub-00", "sub-01"])]
    with pytest.raises(SplitError, match=r"the data has 2 subject\(s\).*needs at least 3"):
        leave_one_mode_out(three, test_subjects=1, val_subjects=1, seed=0)


def _pilot(takes: pd.DataFrame) -> pd.DataFrame:
    """sub-03 lost every 'fear' take (a truncated clip): incomplete data."""
    return takes[~((takes["subject_id"] == "sub-03") & (takes["label"] == "fear"))].reset_index(drop=True)


def test_a_subject_missing_a_class_is_incomplete_and_can_be_dropped(takes: pd.DataFrame) -> None:
    pilot = _pilot(takes)
    assert incomplete_subjects(pilot, CLASSES) == {"sub-03": ["fear"]}
    kept, rep = drop_incomplete(pilot, "subjects")
    assert "sub-03" not in set(kept["subject_id"]) and rep["dropped_subjects"] == ["sub-03"]
    assert rep["dropped_takes"] == len(pilot) - len(kept) == 8
    kept, rep = drop_incomplete(pilot, "classes")
    assert set(kept["label"]) == {"anger", "happiness"} and rep["dropped_classes"] == ["fear"]
    kept, rep = drop_incomplete(pilot, "none")
    assert len(kept) == len(pilot) and rep["incomplete_subjects"] == {"sub-03": ["fear"]} and rep["dropped_takes"] == 0


def test_the_stage_core_reports_a_missing_class_as_incomplete_with_the_setting(
    takes: pd.DataFrame, params: Params
) -> None:
    """Two subjects, each alone in a split, lack a class: the one-line head names the setting, not a leak."""
    tiny = takes[takes["subject_id"].isin(["sub-00", "sub-01", "sub-02"])]
    tiny = tiny[~((tiny["subject_id"] != "sub-00") & (tiny["label"] == "fear"))]
    s = _stage_params(params).split.model_copy(update={"unseen_mode_folds": 3, "subject_kfold_k": 3})
    with pytest.raises(SplitIncompleteError) as e:
        split.compute(tiny, {}, {}, s)
    head = str(e.value).splitlines()[0]
    assert "lack a class (incomplete data, not a leak" in head and "split.drop_incomplete" in head
    assert "sub-01 lacks fear" in head
    out = split.compute(tiny, {}, {}, s.model_copy(update={"drop_incomplete": "classes"}))
    assert out.report["classes"] == ["anger", "happiness"]
    assert out.report["completeness"]["dropped_classes"] == ["fear"]


def test_the_stage_writes_the_factor_protocols_in_the_unseen_mode_shape(
    rig_takes: pd.DataFrame, params: Params
) -> None:
    s = _stage_params(params).split.model_copy(
        update={"seen_modes": [], "leave_one_pose_out": True, "leave_one_illumination_out": True, "val_subjects": 2}
    )
    out = split.compute(rig_takes, {}, {}, s)
    assert set(out.protocols) == {"subject_kfold", "leave_one_pose_out", "leave_one_illumination_out"}
    keys = {"fold", "subjects", "seen_modes", "unseen_modes", "train", "val", "test_seen", "test_unseen"}
    for name in ("leave_one_pose_out", "leave_one_illumination_out"):
        assert all(keys <= set(f) for f in out.protocols[name]["folds"])
        assert out.protocols[name]["classes"] == CLASSES
