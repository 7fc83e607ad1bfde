"""One rating per annotator and take, the same way for every figure.

Why: an annotator who answers a take twice (the first round and a re-annotation, or an edit saved
as a new annotation) must count once, and the same once, in agreement, majority vote and
Dawid-Skene; otherwise those figures disagree about what the data is. The latest answer wins.
"""

from __future__ import annotations

import pandas as pd


def latest_per_annotator(ratings: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep each (take, annotator)'s latest rating (by `created_at`, then annotation id); count the rest."""
    if ratings.empty:
        return ratings, 0
    when = pd.to_datetime(ratings["created_at"], errors="coerce", utc=True)
    order = ratings.assign(_when=when).sort_values(["_when", "annotation_id"], na_position="first", kind="stable")
    latest = order.drop_duplicates(["take_id", "annotator"], keep="last").drop(columns="_when")
    latest = latest.sort_index()
    return latest, len(ratings) - len(latest)
