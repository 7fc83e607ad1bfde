"""A repeated rating by one annotator counts once, the latest, in every QA figure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.qa import agreement as ag
from pipeline.qa.aggregate import majority_vote, vote_counts
from pipeline.qa.ratings import latest_per_annotator


def _ratings() -> pd.DataFrame:
    rows = [  # annotator 2 first says fear on t1, then corrects to surprise in a re-annotation round
        ("t1", 10, "2", "fear", "2026-11-01T10:00:00Z"),
        ("t1", 11, "3", "surprise", "2026-11-01T10:05:00Z"),
        ("t1", 12, "4", "fear", "2026-11-01T10:06:00Z"),
        ("t1", 30, "2", "surprise", "2026-11-03T09:00:00Z"),
        ("t2", 13, "2", "anger", "2026-11-01T11:00:00Z"),
        ("t2", 14, "3", "anger", "2026-11-01T11:02:00Z"),
    ]
    return pd.DataFrame(rows, columns=["take_id", "annotation_id", "annotator", "label", "created_at"])


def test_latest_rating_wins_and_the_rest_are_counted() -> None:
    latest, superseded = latest_per_annotator(_ratings())
    assert superseded == 1 and len(latest) == 5
    mine = latest[(latest["take_id"] == "t1") & (latest["annotator"] == "2")]
    assert mine["label"].tolist() == ["surprise"] and mine["annotation_id"].tolist() == [30]


def test_ties_in_time_fall_back_to_the_annotation_id() -> None:
    r = _ratings()
    r.loc[r["annotation_id"] == 30, "created_at"] = r.loc[r["annotation_id"] == 10, "created_at"].iloc[0]
    latest, _ = latest_per_annotator(r)
    assert latest.set_index(["take_id", "annotator"]).loc[("t1", "2"), "annotation_id"] == 30


def test_votes_and_agreement_see_the_same_single_rating() -> None:
    latest, _ = latest_per_annotator(_ratings())
    classes = ["anger", "fear", "surprise"]
    items = sorted(latest["take_id"].unique())
    annotators = sorted(latest["annotator"].unique())
    codes = pd.DataFrame(
        {
            "item": latest["take_id"].map({t: i for i, t in enumerate(items)}),
            "annotator": latest["annotator"].map({a: i for i, a in enumerate(annotators)}),
            "label": latest["label"].map({c: i for i, c in enumerate(classes)}),
        }
    )
    counts = vote_counts(
        codes["item"].to_numpy(),
        codes["annotator"].to_numpy(),
        codes["label"].to_numpy(),
        len(items),
        len(annotators),
        len(classes),
    )
    data = ag.reliability_matrix(codes, len(classes))
    assert counts.sum() == np.isfinite(data).sum() == 5  # one vote per (take, annotator), in both
    assert counts.sum(axis=0)[0].tolist() == [0, 1, 2]  # t1: fear 1 (annotator 4), surprise 2 (annotators 2 and 3)
    assert counts.max() == 1  # nobody votes twice on a take
    label, _ = majority_vote(counts)
    assert classes[int(label[0])] == "surprise"
