"""The re-annotation loop on simulated data: the queue answered by trusted annotators, rounds merged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import paths
from pipeline.params import Params
from pipeline.qa.export import LabelConfig, parse_export
from pipeline.qa.simulate import round1_verdicts, simulate_export, simulate_round2
from pipeline.qa import stage
from pipeline.qa.stage import load_round, merge_rounds

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


@pytest.fixture(scope="module")
def world() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    n = 360
    ids = [f"take{i:04d}" for i in range(n)]
    truth = pd.DataFrame({"take_id": ids, "expression": [CLASSES[i % 6] for i in range(n)],
                          "onset_frame": rng.integers(1, 5, n), "apex_frame": rng.integers(8, 15, n)})
    takes = pd.DataFrame({"take_id": ids, "path": [f"takes/{t}.mp4" for t in ids], "prompted_expression": truth["expression"],
                          "fps": 10.0, "n_frames": 16})
    return takes, truth


def test_the_queue_goes_to_trusted_annotators_and_merging_empties_it(world, params: Params) -> None:
    takes, truth = world
    config = LabelConfig.load(paths.LABEL_CONFIG)
    p = params.annotate_sim
    first = simulate_export(takes, truth, p, CLASSES)
    queue, flagged = round1_verdicts(first, takes, config, params.qa.thresholds)
    assert flagged == {"4", "5"}  # the fear/surprise confuser and the spammer
    assert len(queue) > 40
    last = max(a["id"] for t in first for a in t["annotations"])
    second = simulate_round2(takes, truth, p, CLASSES, queue, flagged, last + 1)
    assert sorted(t["data"]["take_id"] for t in second) == queue
    answers = [a for t in second for a in t["annotations"]]
    assert {str(a["completed_by"]) for a in answers} <= {"2", "3"}
    assert min(a["id"] for a in answers) == last + 1 and len({a["id"] for a in answers}) == len(answers)
    assert all(len(t["annotations"]) == p.round2_annotators_per_task for t in second)

    known = set(takes["take_id"])
    merged = merge_rounds(parse_export(first, config, known), parse_export(second, config, known))
    assert len(merged.ratings) == len(parse_export(first, config, known).ratings) + len(parse_export(second, config, known).ratings)


def test_the_qa_stage_queues_what_the_simulator_answered_and_the_second_round_shrinks_it(world, params: Params, tmp_path: Path,
                                                                                          monkeypatch) -> None:
    """The real qa.stage.run, first alone then with the re-annotation round: its queue file is the simulator's queue."""
    takes, truth = world
    for name in ("REANNOTATION_QUEUE", "QA_MARKDOWN", "PLOTS"):
        monkeypatch.setattr(paths, name, tmp_path / name.lower())
    config = LabelConfig.load(paths.LABEL_CONFIG)
    p = params.annotate_sim
    first = simulate_export(takes, truth, p, CLASSES)
    queue, flagged = round1_verdicts(first, takes, config, params.qa.thresholds)
    last = max(a["id"] for t in first for a in t["annotations"])
    second = simulate_round2(takes, truth, p, CLASSES, queue, flagged, last + 1)
    (tmp_path / "r1.json").write_text(json.dumps(first))
    (tmp_path / "r2.json").write_text(json.dumps(second))
    takes.assign(status="accepted").to_parquet(tmp_path / "m.parquet", index=False)
    qp = params.model_copy(update={"qa": params.qa.model_copy(update={"truth": str(tmp_path / "none.csv")})})
    kw = {"manifest_path": tmp_path / "m.parquet", "labels_path": tmp_path / "l.parquet", "report_path": tmp_path / "q.json"}

    stage.run(qp, snapshot=tmp_path / "r1.json", **kw)
    assert sorted(pd.read_csv(paths.REANNOTATION_QUEUE)["take_id"]) == queue  # the simulator answered exactly the stage's queue
    rep = stage.run(qp, snapshot=tmp_path / "r1.json", reannotation=tmp_path / "r2.json", **kw)
    after = pd.read_csv(paths.REANNOTATION_QUEUE)
    assert rep["annotations_per_round"]["reannotation"] == sum(len(t["annotations"]) for t in second) - sum(
        a["was_cancelled"] for t in second for a in t["annotations"])
    assert len(after) < len(queue) / 2 and set(after["take_id"]) <= set(takes["take_id"])
    labels = pd.read_parquet(tmp_path / "l.parquet").set_index("take_id")
    answered = labels.loc[[t for t in queue if t not in set(after["take_id"])]]
    assert (answered["status"] == "accepted").all() and len(answered) > 0


def test_an_empty_round_is_allowed_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    from pipeline.qa.export import ExportError

    (tmp_path / "empty.json").write_text("[]\n")
    assert load_round(tmp_path / "empty.json") == []
    (tmp_path / "broken.json").write_text('[{"id": 1')
    with pytest.raises(ExportError, match="broken.json: not valid JSON"):
        load_round(tmp_path / "broken.json")
