"""The release's Croissant texts: a lab's recordings are described from the lab's data and parameters (no
multi-camera rig, no annotators until someone annotates), and the simulator's words stay byte for byte."""

from __future__ import annotations

from typing import Any

from pipeline.params import ReleaseParams
from pipeline.release.documents import (
    SIMULATED_DESCRIPTION,
    SIMULATED_KEYWORDS,
    croissant_meta,
    rai_fields,
)

LAB = ReleaseParams(
    name="pilot",
    version="0.1.0",
    date="2026-12-07",
    license="CC-BY-NC-4.0",
    include_raw=False,
    creator="Face Lab, Univ. X",
    url="",
    previous=None,
)
FIGURES = {
    "takes": 23,
    "subjects": 2,
    "frames": 368,
    "by_mode": {"left": 12, "right": 11},
    "by_prompted_expression": {"anger": 4, "happiness": 3, "surprise": 4},
    "by_label": {},
    "labels_accepted": 0,
    "labels_from_names": 23,
    "by_split": {"unseen_mode/train": 8, "unseen_mode/test_unseen": 11, "subject_kfold/test": 23},
}
NOT_ANNOTATED: dict[str, dict[str, Any]] = {
    "qa": {"tasks": 0},
    "ingest": {"quarantined": 2},
    "align": {"frame_detection_rate": 0.995},
}
ANNOTATED: dict[str, dict[str, Any]] = {
    "qa": {"tasks": 23, "annotations_used": 69, "agreement": {"krippendorff_alpha": 0.8}}
}


def test_a_labs_recordings_are_described_from_its_data_and_parameters() -> None:
    meta = croissant_meta("pilot-0.1.0", "0.1.0", LAB, FIGURES, NOT_ANNOTATED, simulated=False)
    rai = rai_fields(NOT_ANNOTATED, FIGURES, simulated=False, creator=LAB.creator)
    text = " ".join([meta["description"], *meta["file_descriptions"].values(), *map(str, rai.values())])
    assert "Face Lab, Univ. X" in meta["description"] and "Face Lab, Univ. X" in str(rai["dataCollection"])
    assert "2 modes (left, right)" in meta["description"] and "3 expressions (anger, happiness, surprise)" in text
    assert "subject_kfold, unseen_mode" in meta["description"]
    assert "multi-camera" not in text and "annotators with agreement" not in text and "Label Studio" not in text
    assert "not checked by annotators" in str(rai["dataAnnotationProtocol"]) and "dataAnnotationPlatform" not in rai
    assert "dataset_label" in meta["file_descriptions"]["labels"] and "99.5 %" in str(rai["dataBiases"])
    assert "head pose" not in meta["keywords"] and "imulat" not in text


def test_a_lab_whose_takes_were_annotated_says_so() -> None:
    meta = croissant_meta("pilot-0.1.0", "0.1.0", LAB, FIGURES, ANNOTATED, simulated=False)
    rai = rai_fields(ANNOTATED, FIGURES, simulated=False, creator=LAB.creator)
    assert "labelled by annotators with agreement figures" in meta["description"]
    assert rai["dataAnnotationPlatform"] == "Label Studio (Community Edition)"
    assert str(rai["annotationsPerItem"]).startswith("3.00 usable annotations")
    assert "multi-camera" not in str(rai["dataCollection"])


def test_the_simulators_words_are_unchanged() -> None:
    meta = croissant_meta("mvfer-sim-0.1.0", "0.1.0", LAB, FIGURES, ANNOTATED, simulated=True)
    rai = rai_fields(ANNOTATED, FIGURES, simulated=True, creator=LAB.creator)
    assert meta["description"] == SIMULATED_DESCRIPTION and meta["keywords"] == SIMULATED_KEYWORDS
    assert meta["file_descriptions"]["labels"] == "aggregated expression label per take with confidence and agreement"
    assert str(rai["dataCollection"]).startswith("Subjects were recorded by a multi-camera rig")
    assert rai["dataLimitations"] == "Synthetic (simulated) faces; few subjects; posed, not spontaneous, expressions."


def test_the_datasheet_gives_the_evaluated_pairs_accuracy_per_skin_tone_and_mode() -> None:
    from pipeline.release.datasheet import model_by_group

    metrics = {
        "protocol": "leave_one_pose_out",
        "test_sets": ["test_seen", "test_unseen"],
        "independent_runs": 4,
        "primary": {"backend": "cnn_pair", "baseline": "lstm", "candidate": "mv_lstm"},
        "backends": {
            "cnn_pair": {
                v: {"per_mode_accuracy": {"yaw+0_pitch+0/dim": acc, "yaw+30_pitch+0/left": acc - 0.3}}
                for v, acc in (("lstm", 0.7), ("mv_lstm", 0.72), ("mean_pool", 0.6))
            }
        },
        "per_skin_tone_accuracy": {
            "cnn_pair": {"lstm": {"test_seen": {"tone0": 0.81, "tone7": 0.52}, "test_unseen": {"tone0": 0.7}}}
        },
    }
    text = "\n".join(model_by_group(metrics))
    assert "| skin tone | lstm test_seen | lstm test_unseen |" in text and "| tone7 | 0.520 | n/a |" in text
    assert "| mode | lstm | mv_lstm |" in text and "| yaw+30_pitch+0/left | 0.400 | 0.420 |" in text
    assert "mean_pool" not in text  # the pre-registered pair only
    assert "No model has been evaluated" in "\n".join(model_by_group({}))
    metrics["per_skin_tone_accuracy"] = None  # a lab's recordings: no skin tone recorded
    assert "Skin tone is not recorded" in "\n".join(model_by_group(metrics))
