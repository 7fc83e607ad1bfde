"""Bad exports give clear errors or counted exclusions; QA finds the simulated annotators' faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.annotate.export import ExportError, LabelConfig, load_export, parse_export
from pipeline.annotate.simulate import simulate_export
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.qa import stage

CONFIG_XML = Path(__file__).resolve().parents[2] / "annotations" / "labeling_config.xml"
CONFIG = LabelConfig.load(CONFIG_XML)


def _project(tmp_path: Path, manifest: Path) -> Layout:
    """A project folder for the qa shell: the manifest and the labeling config."""
    layout = Layout(tmp_path / "project")
    layout.interim.mkdir(parents=True)
    layout.annotations.mkdir()
    layout.label_config.write_text(CONFIG_XML.read_text())
    pd.read_parquet(manifest).to_parquet(layout.manifest, index=False)
    return layout


CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


def _task(tid: int, take: str, *anns: dict) -> dict:
    return {
        "id": tid,
        "data": {"take_id": take, "video": f"/data/local-files/?d=takes/{take}.mp4"},
        "annotations": list(anns),
    }


def _ann(aid: int, who: int, label: str, flags: list[str] | None = None, **kw) -> dict:
    res = [
        {"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}},
        {"from_name": "onset_frame", "to_name": "video", "type": "number", "value": {"number": 2}},
        {"from_name": "apex_frame", "to_name": "video", "type": "number", "value": {"number": 9}},
    ]
    if flags:
        res.append({"from_name": "quality", "to_name": "video", "type": "choices", "value": {"choices": flags}})
    return {"id": aid, "completed_by": who, "result": res, "was_cancelled": False, "lead_time": 12.0} | kw


def _write(tmp_path: Path, obj, name: str = "export.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_json_min_is_recognised(tmp_path: Path) -> None:
    p = _write(tmp_path, [{"id": 1, "take_id": "a", "expression": "fear", "annotator": 2}])
    with pytest.raises(ExportError, match="JSON_MIN"):
        load_export(p)


def test_truncated_file_names_the_position(tmp_path: Path) -> None:
    text = json.dumps([_task(1, "a", _ann(1, 2, "fear"))])
    with pytest.raises(ExportError, match=r"export\.json: not valid JSON at line 1, column \d+.*truncated"):
        load_export(_write(tmp_path, text[: len(text) // 2]))


@pytest.mark.parametrize("content", ["", "[]", "   \n"])
def test_empty_export_is_an_error(tmp_path: Path, content: str) -> None:
    with pytest.raises(ExportError, match="empty"):
        load_export(_write(tmp_path, content))


def test_unusable_annotations_are_counted_by_reason() -> None:
    tasks = [
        _task(
            1,
            "take-a",
            _ann(1, 2, "fear"),
            _ann(2, 3, "joy"),
            _ann(3, 4, "fear", was_cancelled=True),
            _ann(4, None, "fear"),
            _ann(5, 5, "fear", flags=["sparkly"]),
        ),
        _task(2, "take-zzz", _ann(6, 2, "anger")),
        _task(3, "take-b"),
        _task(4, "take-b", _ann(7, 2, "anger")) | {"drafts": [{"id": 1, "result": []}]},
    ]
    parsed = parse_export(tasks, CONFIG, {"take-a", "take-b"})
    assert len(parsed.ratings) == 2
    assert dict(parsed.excluded) == {
        "label_not_in_config": 1,
        "cancelled_or_skipped": 1,
        "annotator_unknown_or_deleted": 1,
        "quality_flag_not_in_config": 1,
        "task_not_in_manifest": 1,
        "drafts_ignored": 1,
    }
    assert parsed.tasks_without_annotation == 1
    assert "joy" in parsed.examples["label_not_in_config"][0]


def test_labeling_config_lists_expressions_and_flags() -> None:
    assert set(CLASSES) | {"neutral", "unsure"} == set(CONFIG.expressions)
    assert "not_as_prompted" in CONFIG.quality_flags


@pytest.fixture
def sim(tmp_path: Path, params: Params) -> tuple[Path, Path, pd.DataFrame]:
    """A simulated export over 240 fake takes with known truth, and their manifest."""
    rng = np.random.default_rng(1)
    n = 240
    takes = pd.DataFrame(
        {
            "take_id": [f"pf{i:05d}-cam_c" for i in range(n)],
            "status": "accepted",
            "prompted_expression": [CLASSES[i % 6] for i in range(n)],
            "fps": 10.0,
            "n_frames": 16,
        }
    )
    truth = pd.DataFrame(
        {
            "take_id": takes["take_id"],
            "expression": takes["prompted_expression"],
            "onset_frame": rng.integers(1, 3, n),
            "apex_frame": rng.integers(8, 11, n),
        }
    )
    export = simulate_export(takes, truth, params.annotate_sim, CLASSES)
    manifest = tmp_path / "manifest.parquet"
    takes.to_parquet(manifest, index=False)
    truth_csv = tmp_path / "truth.csv"
    truth.to_csv(truth_csv, index=False)
    return _write(tmp_path, export, "sim.json"), manifest, truth_csv


def test_qa_finds_the_spammer_and_the_confuser_and_dawid_skene_beats_majority(
    sim, params: Params, tmp_path: Path
) -> None:
    export, manifest, truth_csv = sim
    layout = _project(tmp_path, manifest)
    p = params.model_copy(update={"qa": params.qa.model_copy(update={"truth": str(truth_csv)})})
    rep = stage.run(layout, p, snapshot=export)
    flagged = {a["annotator"]: a["reasons"] for a in rep["annotators_flagged"]}
    assert set(flagged) == {"4", "5"}
    assert "spammer" in flagged["5"]
    assert "fear" in flagged["4"] and "surprise" in flagged["4"]
    confuser = next(a for a in rep["annotators"] if a["annotator"] == "4")["confusion_matrix"]
    assert confuser["surprise"]["fear"] > 0.5 and confuser["happiness"]["happiness"] > 0.8
    t = rep["against_truth"]
    assert t["dawid_skene_accuracy"] > t["majority_vote_accuracy"]
    assert rep["agreement"]["krippendorff_alpha_without_flagged_annotators"] > rep["agreement"]["krippendorff_alpha"]
    labels = pd.read_parquet(layout.labels)
    assert len(labels) == 240 and set(labels["status"]) <= {"accepted", "reannotate"}
    assert {
        "take_id",
        "label",
        "confidence",
        "n_annotations",
        "agreement",
        "onset_frame",
        "apex_frame",
        "flags",
        "status",
    } <= set(labels.columns)
    queued = labels[labels["status"] == "reannotate"]
    assert queued["reasons"].notna().all()
    assert rep["excluded"].get("cancelled_or_skipped", 0) > 0
    assert layout.qa_markdown.read_text().startswith("# Annotation QA")


def test_onset_after_apex_queues_the_item(tmp_path: Path, params: Params) -> None:
    takes = pd.DataFrame(
        {
            "take_id": ["a", "b"],
            "status": "accepted",
            "prompted_expression": ["fear", "anger"],
            "fps": 10.0,
            "n_frames": 16,
        }
    )
    takes.to_parquet(tmp_path / "m.parquet", index=False)
    late = _ann(3, 2, "anger")
    late["result"][1]["value"]["number"], late["result"][2]["value"]["number"] = 12, 4
    late2 = _ann(4, 3, "anger")
    late2["result"][1]["value"]["number"], late2["result"][2]["value"]["number"] = 11, 5
    export = _write(tmp_path, [_task(1, "a", _ann(1, 2, "fear"), _ann(2, 3, "fear")), _task(2, "b", late, late2)])
    p = params.model_copy(update={"qa": params.qa.model_copy(update={"truth": str(tmp_path / "none.csv")})})
    layout = _project(tmp_path, tmp_path / "m.parquet")
    stage.run(layout, p, snapshot=export)
    labels = pd.read_parquet(layout.labels).set_index("take_id")
    assert labels.loc["b", "status"] == "reannotate" and "after apex" in labels.loc["b", "reasons"]
