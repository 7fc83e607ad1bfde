"""Per-annotation checks that catch blind confirming: no timeline marks, implausibly fast submits,
and how often annotators agree with the model's guess (a pre-annotation they might just accept).

Pure functions over the parsed ratings; the QA stage merges the result into its annotator table.
"""

from __future__ import annotations

import pandas as pd

MARK_PROBLEM_TEXT = {
    "missing": "no onset/apex mark",
    "out_of_range": "marks outside the take",
    "onset_after_apex": "onset after apex",
    "several_marks": "several marks of one kind",
}
PROMPTED_VERSION = "prompted"  # predictions that only repeat the prompt are not a model


def model_guesses(predictions: pd.DataFrame) -> pd.Series:
    """take_id -> the model's label (the newest model_version by name when a take has several)."""
    if predictions is None or predictions.empty:
        return pd.Series(dtype=object)
    p = predictions[predictions["model_version"] != PROMPTED_VERSION]
    return (
        p.sort_values(["take_id", "model_version"])
        .drop_duplicates("take_id", keep="last")
        .set_index("take_id")["label"]
    )


def annotator_checks(r: pd.DataFrame, predictions: pd.DataFrame, min_lead_time_s: float) -> pd.DataFrame:
    """Per annotator: share too fast, share without usable marks, agreement with the model."""
    guess = model_guesses(predictions)
    rows = []
    for who, g in r.groupby("annotator"):
        lead = pd.to_numeric(g["lead_time"], errors="coerce")
        with_guess = g[g["take_id"].isin(guess.index)]
        rows.append(
            {
                "annotator": who,
                "too_fast": int((lead < min_lead_time_s).sum()),
                "too_fast_share": float((lead < min_lead_time_s).mean()) if len(g) else 0.0,
                "without_marks_share": float(g["mark_problem"].notna().mean()) if len(g) else 0.0,
                "model_items": len(with_guess),
                "agreement_with_model": float(
                    (with_guess["label"].to_numpy() == guess.loc[with_guess["take_id"]].to_numpy()).mean()
                )
                if len(with_guess)
                else None,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "annotator",
            "too_fast",
            "too_fast_share",
            "without_marks_share",
            "model_items",
            "agreement_with_model",
        ],
    )


def merge_checks(ann: pd.DataFrame, checks: pd.DataFrame, min_lead_time_s: float) -> pd.DataFrame:
    """The annotator table with the checks' columns, and flagged when most annotations are too fast or unmarked."""
    out = ann.merge(checks, on="annotator", how="left")
    for i, row in out.iterrows():
        extra = []
        if row["too_fast_share"] > 0.5:
            extra.append(f"{row['too_fast_share']:.0%} submitted in under {min_lead_time_s:g} s")
        if row["without_marks_share"] > 0.5:
            extra.append(f"{row['without_marks_share']:.0%} without usable onset/apex marks")
        if extra:
            out.at[i, "reasons"] = "; ".join([r for r in [row["reasons"]] if r] + extra)
            out.at[i, "flagged"] = True
    return out


def summary(r: pd.DataFrame, mark_problems: dict, predictions: pd.DataFrame, min_lead_time_s: float) -> dict:
    """The report's `annotation_checks` block."""
    guess = model_guesses(predictions)
    with_guess = r[r["take_id"].isin(guess.index)]
    lead = pd.to_numeric(r["lead_time"], errors="coerce")
    return {
        "too_fast": int((lead < min_lead_time_s).sum()),
        "min_lead_time_s": min_lead_time_s,
        "mark_problems": {k: int(v) for k, v in sorted(mark_problems.items())},
        "marks_source": {str(k): int(v) for k, v in r["marks_source"].value_counts().items()},
        "model_items": len(with_guess),
        "agreement_with_model": round(
            float((with_guess["label"].to_numpy() == guess.loc[with_guess["take_id"]].to_numpy()).mean()), 4
        )
        if len(with_guess)
        else None,
    }


def item_mark_reason(g: pd.DataFrame) -> str | None:
    """Why an item has no usable onset/apex, when none of its annotations gave one."""
    if g["onset_frame"].notna().any() and g["apex_frame"].notna().any():
        return None
    probs = g["mark_problem"].dropna().value_counts()
    if probs.empty:
        return None
    return "no usable onset/apex: " + ", ".join(
        f"{MARK_PROBLEM_TEXT.get(str(k), str(k))} in {v} of {len(g)}" for k, v in probs.items()
    )
