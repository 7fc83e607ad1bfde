"""Frame convention (player 1-based <-> take 0-based), timeline/number parsing, guesses, push payloads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from pipeline.annotate.export import LabelConfig, gold_digest, onset_apex, parse_export
from pipeline.annotate.frames import player_frame, take_frame
from pipeline.annotate.guesses import GuessesError, load_guesses
from pipeline.annotate.lsguard.mvfer_ls_guard import check_marks
from pipeline.annotate.sync import (
    PushOptions,
    answered_by,
    assign,
    gold_annotation,
    guide_html,
    is_gold,
    marks_result,
    order_takes,
    project_settings,
    serving_order,
    task_payload,
)
from pipeline.qa.checks import annotator_checks, item_mark_reason, merge_checks

ROOT = Path(__file__).resolve().parents[2]
CONFIG_XML = ROOT / "annotations" / "labeling_config.xml"
CONFIG = LabelConfig.load(CONFIG_XML)


def _mark(name: str, start: float, end: float | None = None) -> dict:
    return {
        "from_name": "marks",
        "to_name": "video",
        "type": "timelinelabels",
        "value": {"ranges": [{"start": start, "end": start if end is None else end}], "timelinelabels": [name]},
    }


def _choice(label: str) -> dict:
    return {"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}}


def test_player_frames_are_take_frames_plus_one() -> None:
    assert [take_frame(k) for k in (1, 5, 16)] == [0, 4, 15]
    assert [player_frame(k) for k in (0, 4, 15)] == [1, 5, 16]
    assert all(take_frame(player_frame(k)) == k for k in range(100))
    assert take_frame(5.0000001) == 4  # the timeline may report floats
    with pytest.raises(ValueError):
        take_frame(float("nan"))


def test_config_declares_timeline_marks_on_the_video() -> None:
    assert CONFIG.marks == ("onset", "apex", "offset")
    text = CONFIG_XML.read_text()
    assert 'framerate="$fps"' in text and "$prompted_expression" not in text  # the prompt is never in the config
    import re

    height = int(re.search(r'<Video [^>]*height="(\d+)"', text).group(1))
    assert height >= 320  # a face can be judged (the browser test measures the box drawn)
    hotkeys = re.findall(r'hotkey="([^"]+)"', text)
    assert len(hotkeys) == len(set(hotkeys)) and not set(hotkeys) & set("oaezx")  # mvfer's page keys stay free


def test_timeline_marks_become_0_based_take_frames() -> None:
    res = [_choice("fear"), _mark("onset", 3), _mark("apex", 9), _mark("offset", 14)]
    assert onset_apex(res, n_frames=16) == (2, 8, 13, None, "timeline")


@pytest.mark.parametrize(
    "result, problem",
    [
        ([_mark("onset", 3)], "missing"),  # no apex
        ([], "missing"),  # no marks at all
        ([_mark("onset", 3), _mark("apex", 17)], "out_of_range"),  # player frame 17 = take frame 16 of a 16-frame take
        ([_mark("onset", 0), _mark("apex", 4)], "out_of_range"),  # player frame 0 does not exist
        ([_mark("onset", 9), _mark("apex", 4)], "onset_after_apex"),
        ([_mark("onset", 2), _mark("onset", 3), _mark("apex", 4)], "several_marks"),
    ],
)
def test_bad_marks_are_named_and_dropped(result: list[dict], problem: str) -> None:
    onset, apex, _, got, _ = onset_apex([_choice("fear"), *result], n_frames=16)
    assert got == problem
    if problem != "missing":
        assert onset is None and apex is None


def test_old_number_fields_still_parse_as_0_based() -> None:
    res = [
        _choice("fear"),
        {"from_name": "onset_frame", "type": "number", "value": {"number": 2}},
        {"from_name": "apex_frame", "type": "number", "value": {"number": 7}},
    ]
    assert onset_apex(res, n_frames=16) == (2, 7, None, None, "number")
    res[2]["value"]["number"] = 99  # apex 99 on a 16-frame take: passed before, now flagged
    assert onset_apex(res, n_frames=16)[3] == "out_of_range"


def test_parse_export_counts_mark_problems_and_keeps_labels() -> None:
    def ann(i: int, *res: dict) -> dict:
        return {"id": i, "completed_by": i, "result": [_choice("fear"), *res], "lead_time": 10.0}

    tasks = [
        {
            "id": 1,
            "data": {"take_id": "a"},
            "annotations": [
                ann(1, _mark("onset", 2), _mark("apex", 5)),
                ann(2),
                ann(3, _mark("onset", 2), _mark("apex", 40)),
            ],
            "predictions": [{"model_version": "m1", "score": 0.4, "result": [_choice("fear")]}],
        },
        {"id": 2, "data": {"take_id": "b"}, "annotations": [ann(4, _mark("smile", 3))]},
    ]
    p = parse_export(tasks, CONFIG, {"a", "b"}, {"a": 16, "b": 16})
    assert len(p.ratings) == 3 and p.excluded["timeline_label_not_in_config"] == 1
    assert p.mark_problems == Counter({"missing": 1, "out_of_range": 1})
    first = p.ratings.iloc[0]
    assert (first["onset_frame"], first["apex_frame"]) == (1, 4)
    assert p.predictions.to_dict(orient="records") == [
        {"take_id": "a", "model_version": "m1", "label": "fear", "score": 0.4}
    ]
    assert item_mark_reason(p.ratings[p.ratings["take_id"] == "a"]) is None  # one usable annotation is enough


def test_checks_flag_fast_unmarked_annotators_and_measure_model_agreement() -> None:
    r = pd.DataFrame(
        {
            "annotator": ["1", "1", "2", "2"],
            "take_id": ["a", "b", "a", "b"],
            "label": ["fear", "anger", "fear", "fear"],
            "lead_time": [2.0, 3.0, 30.0, 40.0],
            "mark_problem": ["missing", "missing", None, None],
            "onset_frame": [None, None, 1, 2],
            "apex_frame": [None, None, 4, 5],
        }
    )
    preds = pd.DataFrame(
        {
            "take_id": ["a", "b", "b"],
            "model_version": ["m", "m", "prompted"],
            "label": ["fear", "fear", "anger"],
            "score": [0.9, 0.8, 1.0],
        }
    )
    checks = annotator_checks(r, preds, min_lead_time_s=4.0).set_index("annotator")
    assert checks.loc["1", "too_fast"] == 2 and checks.loc["2", "too_fast"] == 0
    assert (
        checks.loc["1", "agreement_with_model"] == 0.5 and checks.loc["2", "agreement_with_model"] == 1.0
    )  # 'prompted' is no model
    ann = pd.DataFrame({"annotator": ["1", "2"], "flagged": [False, False], "reasons": [None, None]})
    merged = merge_checks(ann, checks.reset_index(), 4.0).set_index("annotator")
    assert (
        merged.loc["1", "flagged"]
        and "under 4 s" in merged.loc["1", "reasons"]
        and "onset/apex" in merged.loc["1", "reasons"]
    )
    assert not merged.loc["2", "flagged"]
    assert "no onset/apex mark in 2 of 2" in item_mark_reason(r[r["annotator"] == "1"])


def test_guesses_file_rows_are_checked_one_by_one(tmp_path: Path) -> None:
    f = tmp_path / "predictions.csv"
    f.write_text(
        "take_id,label,confidence,model_version,extra\n"
        "a,fear,0.3,m1,x\nb,joy,0.9,m1,x\nc,fear,0.5,m1,x\na,anger,0.9,m1,x\nd,fear,1.5,m1,x\ne,fear,0.7,,x\n"
    )
    g = load_guesses(f, {"a", "b", "d", "e"}, set(CONFIG.expressions))
    assert list(g.table.index) == ["a"] and g.get("a") == ("fear", 0.3, "m1")
    assert g.skipped == Counter(
        {
            "label_not_in_config": 1,
            "unknown_take": 1,
            "repeated_take": 1,
            "confidence_not_in_0_1": 1,
            "no_model_version": 1,
        }
    )
    (tmp_path / "bad.csv").write_text("take,label\n")
    with pytest.raises(GuessesError, match="bad.csv: missing column"):
        load_guesses(tmp_path / "bad.csv", set(), set())


def test_uncertainty_order_puts_the_least_confident_first(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("take_id,label,confidence,model_version\na,fear,0.9,m\nb,fear,0.2,m\nc,anger,0.5,m\n")
    g = load_guesses(f, {"a", "b", "c", "d"}, set(CONFIG.expressions))
    takes = pd.DataFrame({"take_id": ["d", "c", "b", "a"]})
    assert list(order_takes(takes, "uncertainty", g)["take_id"]) == ["b", "c", "a", "d"]  # unguessed last
    assert list(order_takes(takes, "sequential", None)["take_id"]) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="--guesses"):
        order_takes(takes, "uncertainty", None)


def test_payload_shows_no_prompt_and_prefills_nothing_by_default() -> None:
    row = pd.Series({"take_id": "s01_t1", "prompted_expression": "fear", "fps": 10.0, "n_frames": 16})
    row = next(pd.DataFrame([row]).itertuples(index=False))
    plain = task_payload(row, "media", PushOptions())
    assert plain["predictions"] == [] and plain["data"]["prompt_note"] == "" and "fear" not in str(plain["data"])
    assert plain["data"]["video"] == "/data/local-files/?d=media/s01_t1.mp4"
    shown = task_payload(row, "media", PushOptions(prefill="prompted", show_prompt=True), guess=("anger", 0.4, "m1"))
    assert (
        "fear" in shown["data"]["prompt_note"] and "annotations" not in shown
    )  # no gold answer ever goes to Label Studio
    assert [(p["model_version"], p["score"]) for p in shown["predictions"]] == [("prompted", 1.0), ("m1", 0.4)]
    gold = gold_annotation("s01_t1", {"expression": "fear", "onset_frame": 2, "apex_frame": 7}, "gold.csv")
    assert gold["ground_truth"] and onset_apex(gold["result"], 16)[:2] == (2, 7)  # gold frames round-trip exactly
    assert gold["mvfer_gold"]["sha256"] == gold_digest(gold["result"])


def test_project_settings_serve_each_task_to_overlap_annotators() -> None:
    s = project_settings(PushOptions(overlap=3), None)
    assert s["maximum_annotations"] == 3 and s["overlap_cohort_percentage"] == 100
    assert not s["show_collab_predictions"] and not s["enable_empty_annotation"]
    assert project_settings(PushOptions(prefill="model"), "m1")["model_version"] == "m1"


def test_gold_draw_is_stable_and_near_the_fraction() -> None:
    takes = [f"t{i}" for i in range(2000)]
    share = sum(is_gold(t, 0.1, 0) for t in takes) / len(takes)
    assert 0.08 < share < 0.12
    assert [is_gold(t, 0.1, 0) for t in takes] == [is_gold(t, 0.1, 0) for t in takes]
    assert not any(is_gold(t, 0.0, 0) for t in takes)
    assert marks_result("fear", None, None) == [_choice("fear")]


def test_takes_go_to_overlap_annotators_and_a_new_one_moves_nothing() -> None:
    takes = [f"t{i}" for i in range(300)]
    two = assign(takes, ["ana", "ben", "cat"], 2, seed=0)
    assert sum(len(v) for v in two.values()) == 600 and all(80 < len(v) < 220 for v in two.values())
    more = assign(takes, ["ana", "ben", "cat", "dan"], 2, seed=0)
    for who in ("ana", "ben", "cat"):  # a take someone keeps is never reassigned away from them... except to dan
        assert set(more[who]) <= set(two[who])
    df = pd.DataFrame({"take_id": takes[:20]})
    a, b = serving_order(df, "ana", PushOptions(), None), serving_order(df, "ben", PushOptions(), None)
    assert sorted(a["take_id"]) == sorted(b["take_id"]) and list(a["take_id"]) != list(
        b["take_id"]
    )  # each their own order


def test_a_new_round_goes_to_annotators_who_have_not_answered() -> None:
    tasks = [
        {
            "data": {"take_id": "t1"},
            "annotations": [
                {"completed_by_account": "ana", "result": []},
                {"completed_by_account": "ben", "result": []},
                {"completed_by_account": "expert", "ground_truth": True},
                {"completed_by_account": "cat", "was_cancelled": True},
            ],
        }
    ]
    answered = answered_by(tasks)
    assert answered == {"t1": {"ana", "ben"}}
    plan = assign(["t1"], ["ana", "ben", "cat"], 1, seed=0, exclude=answered)
    assert plan == {"ana": [], "ben": [], "cat": ["t1"]}  # the 1-1 tie of ana and ben goes to a third annotator


def test_the_server_side_mark_check() -> None:
    ok = [_mark("onset", 2), _mark("apex", 5)]
    assert check_marks(ok, 8) is None
    assert "no onset mark" in check_marks([_mark("apex", 5)], 8)
    assert "outside the take's frames 1-8" in check_marks([_mark("onset", 2), _mark("apex", 25)], 8)
    assert "after apex" in check_marks([_mark("onset", 6), _mark("apex", 5)], 8)
    assert "mark one frame" in check_marks([_mark("onset", 2, 4), _mark("apex", 5)], 8)
    assert "2 apex marks" in check_marks([_mark("onset", 2), _mark("apex", 5), _mark("apex", 6)], 8)


def test_instructions_come_from_the_annotator_guide() -> None:
    html = guide_html(ROOT / "docs" / "annotator-guide.md")
    assert "<li>" in html and "ArrowRight" in html and "onset" in html and "What the lab lead does" not in html
