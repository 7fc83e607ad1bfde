"""QA that respects frames and sample sizes (issue 18): aggregated frames are frames (median, lower
middle on an even count), gold items carry the expert's frames, a gold answer changed after pull is
found, a 1-1 split goes to adjudication, an annotator flag needs enough items and states its
interval, qa.md lists mark problems by annotator account. Cores called with data; one shell run on
Layout(tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.annotate.export import LabelConfig, parse_export
from pipeline.annotate.sync import gold_annotation, marks_result
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.qa import stage as qa_stage
from pipeline.qa.stage import assess, frame_median, render_markdown, vote_tie, wilson

CONFIG = LabelConfig.load(Path(__file__).resolve().parents[2] / "annotations" / "labeling_config.xml")


def _manifest(n_takes: int = 4, n_frames: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "take_id": [f"t{i}" for i in range(n_takes)],
            "status": "accepted",
            "n_frames": n_frames,
            "fps": 10.0,
            "prompted_expression": "happiness",
            "source": "simulator",
        }
    )


def _ann(i: int, who: str, label: str, onset: int | None, apex: int | None) -> dict:
    return {
        "id": i,
        "completed_by": 0,
        "completed_by_account": who,
        "result": marks_result(label, onset, apex),
        "was_cancelled": False,
        "ground_truth": False,
        "lead_time": 30.0,
        "created_at": f"2026-01-01T00:00:{i:02d}Z",
    }


def _task(i: int, take: str, anns: list[dict]) -> dict:
    return {"id": i, "data": {"take_id": take}, "annotations": anns}


def test_frame_median_is_a_frame_and_ties_take_the_earlier() -> None:
    assert frame_median([3, 5, 4]) == 4
    assert frame_median([3, 8]) == 3  # even count: the lower middle mark, never 5.5
    assert frame_median([2, 9, 4, 7]) == 4
    assert frame_median([]) is None
    assert vote_tie(pd.Series(["fear", "surprise"])) == ("fear", "surprise")
    assert vote_tie(pd.Series(["fear", "fear", "surprise"])) is None
    lo, hi = wilson(1, 1)
    assert lo < 0.25 and hi == 1.0  # one item says almost nothing


def test_labels_hold_frames_gold_frames_and_ties(params: Params) -> None:
    tasks = [
        _task(
            1, "t0", [_ann(1, "ana@lab", "happiness", 2, 5), _ann(2, "ben@lab", "happiness", 3, 8)]
        ),  # apex 5 vs 8 -> 5
        _task(2, "t1", [_ann(3, "ana@lab", "fear", 1, 4), _ann(4, "ben@lab", "surprise", 1, 4)]),  # 1-1 tie
        _task(
            3,
            "t2",
            [
                _ann(5, "ana@lab", "happiness", 1, 3),
                _ann(6, "ben@lab", "sadness", 2, 6),
                gold_annotation("t2", {"expression": "anger", "onset_frame": 4, "apex_frame": 7}, "gold.csv"),
            ],
        ),
        _task(4, "t3", [_ann(7, "ana@lab", "happiness", None, None), _ann(8, "ben@lab", "happiness", 2, 12)]),
    ]
    a = assess(tasks, [], _manifest(), CONFIG, params.qa.thresholds)
    lab = a.labels.set_index("take_id")
    assert str(lab["apex_frame"].dtype) == "Int64"
    # _ann/marks_result take 0-based frames (stored 1-based, as the player counts); onsets 2, 3 and apexes 5, 8
    assert (lab.loc["t0", "onset_frame"], lab.loc["t0", "apex_frame"]) == (2, 5)
    assert (
        lab.loc["t1", "status"] == "reannotate"
        and "tie 1-1 (fear vs surprise): adjudication" in lab.loc["t1", "reasons"]
    )
    assert (lab.loc["t2", "label"], lab.loc["t2", "source"]) == ("anger", "gold")
    assert (lab.loc["t2", "onset_frame"], lab.loc["t2", "apex_frame"]) == (4, 7)  # the expert's frames
    rep = a.report
    assert rep["mark_problems_by_annotator"] == {"ana@lab": {"missing": 1}, "ben@lab": {"out_of_range": 1}}
    md = render_markdown(rep, a.annotators, a.classes)
    assert (
        "## Mark problems" in md
        and "| ana@lab | no onset/apex mark | 1 |" in md
        and "| ben@lab | marks outside the take | 1 |" in md
    )
    assert not a.annotators["flagged"].any()  # two annotators, a handful of items: no verdict on anyone


def test_a_confusion_flag_needs_items_and_states_its_interval(params: Params) -> None:
    th = params.qa.thresholds.model_copy(update={"min_items_for_flag": 10})
    n = 24
    tasks = []
    for i in range(n):  # three agree on the truth; "cat" says surprise for every fear item
        truth = "fear" if i % 2 else "happiness"
        anns = [_ann(10 * i + k, who, truth, 1, 3) for k, who in enumerate(("ana@lab", "ben@lab", "dan@lab"))]
        anns.append(_ann(10 * i + 5, "cat@lab", "surprise" if truth == "fear" else truth, 1, 3))
        tasks.append(_task(i, f"t{i}", anns))
    a = assess(tasks, [], _manifest(n), CONFIG, th)
    cat = a.annotators.set_index("annotator").loc["cat@lab"]
    assert cat["flagged"] and "confuses fear -> surprise (12 of 12 fear items, 95% CI" in cat["reasons"]
    few = assess(tasks[:6], [], _manifest(6), CONFIG, th)  # 3 fear items: too few for a verdict
    assert not few.annotators.set_index("annotator").loc["cat@lab", "flagged"]


def test_changed_gold_is_found_and_not_used(params: Params) -> None:
    gold = gold_annotation("t0", {"expression": "happiness", "onset_frame": 1, "apex_frame": 4}, "gold.csv")
    gold["result"][0]["value"]["choices"] = ["anger"]  # edited after the pull
    tasks = [_task(1, "t0", [_ann(1, "ana@lab", "happiness", 2, 5), gold])]
    parsed = parse_export(tasks, CONFIG, {"t0"}, {"t0": 10})
    assert [c["take_id"] for c in parsed.gold_changed] == ["t0"] and parsed.excluded[
        "gold_answer_changed_after_pull"
    ] == 1
    a = assess(tasks, [], _manifest(1), CONFIG, params.qa.thresholds)
    assert a.report["gold"]["items"] == 0 and len(a.report["gold"]["changed"]) == 1
    assert "gold answer changed" in render_markdown(a.report, a.annotators, a.classes)


def test_stage_shell_on_a_layout(tmp_path: Path, params: Params) -> None:
    layout = Layout(tmp_path)
    layout.interim.mkdir(parents=True)
    _manifest().to_parquet(layout.manifest, index=False)
    layout.annotations.mkdir()
    (layout.annotations / "labeling_config.xml").write_text(
        (Path(__file__).resolve().parents[2] / "annotations" / "labeling_config.xml").read_text()
    )
    snap = layout.annotations / "snapshot.json"
    snap.write_text(
        json.dumps([_task(1, "t0", [_ann(1, "ana@lab", "happiness", 2, 5), _ann(2, "ben@lab", "happiness", 2, 5)])])
    )
    p = params.model_copy(
        update={"qa": params.qa.model_copy(update={"snapshot": str(snap), "truth": "", "reannotation_snapshot": ""})}
    )
    rep = qa_stage.run(layout, p)
    assert rep["snapshot"] == "annotations/snapshot.json" and layout.labels.exists() and layout.qa_markdown.exists()
    assert pd.read_parquet(layout.labels).set_index("take_id").loc["t0", "apex_frame"] == 5


@pytest.mark.parametrize("values,expected", [([1], 1), ([1, 2], 1), ([4, 1, 2], 2)])
def test_frame_median_cases(values, expected) -> None:
    assert frame_median(values) == expected
