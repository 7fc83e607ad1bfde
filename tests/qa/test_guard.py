"""Simulated annotations never label real takes; the no-second-round setting is a file DVC can depend on."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline import vocab
from pipeline.annotate import simulate
from pipeline.layout import Layout
from pipeline.params import Params, QAParams
from pipeline.qa import stage
from pipeline.qa.guard import SimulatedLabelsError, refuse_simulated_labels_on_real_data
from pipeline.qa.stage import load_round

ROOT = Path(__file__).resolve().parents[2]


def _manifest(tmp_path: Path, source: str | None) -> Layout:
    """A project folder holding a one-take manifest from `source`, the labeling config and the empty export."""
    layout = Layout(tmp_path)
    m = pd.DataFrame(
        {"take_id": ["a"], "status": vocab.ACCEPTED, "prompted_expression": "fear", "fps": 10.0, "n_frames": 16}
    )
    if source is not None:
        m[vocab.SOURCE_COLUMN] = source
    layout.interim.mkdir(parents=True, exist_ok=True)
    layout.annotations.mkdir(exist_ok=True)
    for name in ("labeling_config.xml", "no_reannotation.json"):
        (layout.annotations / name).write_text((ROOT / "annotations" / name).read_text())
    m.to_parquet(layout.manifest, index=False)
    return layout


def test_qa_refuses_sim_snapshots_on_rig_takes_naming_both_keys(tmp_path: Path, params: Params) -> None:
    with pytest.raises(SimulatedLabelsError, match=r"'rig'.*qa\.snapshot and qa\.reannotation_snapshot") as e:
        stage.run(_manifest(tmp_path, vocab.SOURCE_RIG), params)
    assert "\n" not in str(e.value)
    assert not Layout(tmp_path).labels.exists()


def test_annotate_sim_refuses_rig_takes_and_a_manifest_without_source(tmp_path: Path, params: Params) -> None:
    with pytest.raises(SimulatedLabelsError, match=r"qa\.snapshot"):
        simulate.run(_manifest(tmp_path, vocab.SOURCE_RIG), params)
    with pytest.raises(SimulatedLabelsError, match="re-run ingest"):
        simulate.run(_manifest(tmp_path, None), params)
    layout = Layout(tmp_path)
    assert not layout.annotations_sim.exists() and not layout.annotations_sim_round2.exists()


def test_only_the_keys_still_on_sim_exports_are_named_and_real_snapshots_pass(params: Params, tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    rig = pd.DataFrame({vocab.SOURCE_COLUMN: [vocab.SOURCE_RIG]})
    half = params.qa.model_copy(update={"snapshot": "annotations/snapshot.json"})
    with pytest.raises(SimulatedLabelsError, match="but qa.reannotation_snapshot point"):
        refuse_simulated_labels_on_real_data(rig, half, layout)
    real = half.model_copy(update={"reannotation_snapshot": "annotations/no_reannotation.json"})
    refuse_simulated_labels_on_real_data(rig, real, layout)  # no error: real annotation configured
    refuse_simulated_labels_on_real_data(
        pd.DataFrame({vocab.SOURCE_COLUMN: [vocab.SOURCE_SIMULATOR] * 2}), params.qa, layout
    )


def test_no_second_round_is_an_existing_empty_file_and_an_empty_key_is_refused(params: Params) -> None:
    assert load_round(ROOT / "annotations" / "no_reannotation.json") == []
    with pytest.raises(ValueError, match="reannotation_snapshot"):
        QAParams.model_validate({**params.qa.model_dump(), "reannotation_snapshot": ""})


def test_the_shipped_empty_export_as_snapshot_gives_every_take_no_label(tmp_path: Path, params: Params) -> None:
    """An imported dataset labelled by `split.labels: dataset` runs QA before anyone annotated it."""
    empty = params.qa.model_copy(
        update={
            "snapshot": "annotations/no_reannotation.json",
            "reannotation_snapshot": "annotations/no_reannotation.json",
        }
    )
    layout = _manifest(tmp_path, vocab.SOURCE_RIG)
    report = stage.run(layout, params.model_copy(update={"qa": empty}))
    labels = pd.read_parquet(layout.labels)
    assert list(labels["take_id"]) == ["a"] and (labels["status"] != vocab.ACCEPTED).all()
    assert report["annotations_used"] == 0


def test_an_empty_snapshot_other_than_the_shipped_one_is_a_failed_pull(tmp_path: Path, params: Params) -> None:
    (tmp_path / "snap.json").write_text("[]")
    with pytest.raises(ValueError, match="snap.json: the export is empty"):
        stage.run(_manifest(tmp_path, vocab.SOURCE_RIG), params, snapshot=tmp_path / "snap.json")
