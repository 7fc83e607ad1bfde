"""The re-annotation loop on simulated data: the queue answered by trusted annotators, rounds merged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.annotate.export import LabelConfig, parse_export
from pipeline.annotate.simulate import round1_verdicts, simulate_export, simulate_round2
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.qa import stage
from pipeline.qa.stage import load_round, merge_rounds

CONFIG_XML = Path(__file__).resolve().parents[2] / "annotations" / "labeling_config.xml"
CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


@pytest.fixture(scope="module")
def world() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    n = 360
    ids = [f"take{i:04d}" for i in range(n)]
    truth = pd.DataFrame(
        {
            "take_id": ids,
            "expression": [CLASSES[i % 6] for i in range(n)],
            "onset_frame": rng.integers(1, 5, n),
            "apex_frame": rng.integers(8, 15, n),
        }
    )
    takes = pd.DataFrame(
        {
            "take_id": ids,
            "path": [f"takes/{t}.mp4" for t in ids],
            "prompted_expression": truth["expression"],
            "fps": 10.0,
            "n_frames": 16,
        }
    )
    return takes, truth


def test_the_queue_goes_to_trusted_annotators_and_merging_empties_it(world, params: Params) -> None:
    takes, truth = world
    config = LabelConfig.load(CONFIG_XML)
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
    assert len(merged.ratings) == len(parse_export(first, config, known).ratings) + len(
        parse_export(second, config, known).ratings
    )


def test_the_qa_stage_queues_what_the_simulator_answered_and_the_second_round_shrinks_it(
    world, params: Params, tmp_path: Path
) -> None:
    """The real qa.stage.run, first alone then with the re-annotation round: its queue file is the simulator's queue."""
    takes, truth = world
    config = LabelConfig.load(CONFIG_XML)
    p = params.annotate_sim
    first = simulate_export(takes, truth, p, CLASSES)
    queue, flagged = round1_verdicts(first, takes, config, params.qa.thresholds)
    last = max(a["id"] for t in first for a in t["annotations"])
    second = simulate_round2(takes, truth, p, CLASSES, queue, flagged, last + 1)
    (tmp_path / "r1.json").write_text(json.dumps(first))
    (tmp_path / "r2.json").write_text(json.dumps(second))
    layout = Layout(tmp_path / "project")
    layout.interim.mkdir(parents=True)
    layout.annotations.mkdir()
    layout.label_config.write_text(CONFIG_XML.read_text())
    takes.assign(status="accepted").to_parquet(layout.manifest, index=False)
    qp = params.model_copy(
        update={
            "qa": params.qa.model_copy(
                update={
                    "truth": "",
                    "snapshot": str(tmp_path / "r1.json"),
                    "reannotation_snapshot": str(tmp_path / "r2.json"),
                }
            )
        }
    )

    stage.run(layout, qp, snapshot=tmp_path / "r1.json")
    assert (
        sorted(pd.read_csv(layout.reannotation_queue)["take_id"]) == queue
    )  # the simulator answered exactly the stage's queue
    rep = stage.run(layout, qp)  # qa.snapshot and qa.reannotation_snapshot
    after = pd.read_csv(layout.reannotation_queue)
    assert rep["annotations_per_round"]["reannotation"] == sum(len(t["annotations"]) for t in second) - sum(
        a["was_cancelled"] for t in second for a in t["annotations"]
    )
    assert len(after) < len(queue) / 2 and set(after["take_id"]) <= set(takes["take_id"])
    labels = pd.read_parquet(layout.labels).set_index("take_id")
    answered = labels.loc[[t for t in queue if t not in set(after["take_id"])]]
    assert (answered["status"] == "accepted").all() and len(answered) > 0


def test_an_empty_round_is_allowed_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    from pipeline.annotate.export import ExportError

    (tmp_path / "empty.json").write_text("[]\n")
    assert load_round(tmp_path / "empty.json") == []
    (tmp_path / "broken.json").write_text('[{"id": 1')
    with pytest.raises(ExportError, match="broken.json: not valid JSON"):
        load_round(tmp_path / "broken.json")
