"""The QA stage: from an annotation snapshot to trusted labels, agreement figures and a
re-annotation queue.

`unsure` answers are abstentions (counted, not a class). Gold (ground-truth) annotations measure
annotators and fix their items' labels; they are left out of agreement and aggregation so they do
not inflate either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.annotate.export import UNSURE, LabelConfig, Parsed, load_export, parse_export
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.qa import agreement as ag
from pipeline.qa import checks
from pipeline.qa.aggregate import dawid_skene, majority_vote, spammer_score, top_confusion, vote_counts
from pipeline.qa.guard import refuse_simulated_labels_on_real_data
from pipeline.qa.ratings import latest_per_annotator
from pipeline.stage import with_provenance
from pipeline.utils import io

log = logging.getLogger(__name__)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n (honest on small n, unlike k/n +- 2 SE)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def frame_median(values) -> int | None:
    """The aggregated frame of several marks: their median, itself a frame. Tie rule: with an even
    number of marks the lower of the two middle marks (the earlier frame) is taken."""
    v = sorted(int(x) for x in values if x is not None and x == x)
    return v[(len(v) - 1) // 2] if v else None


def vote_tie(labels: pd.Series) -> tuple[str, ...] | None:
    """The labels tied for the most votes (e.g. a 1-1 split of two annotators), or None."""
    counts = labels.value_counts()
    if len(counts) < 2 or counts.iloc[0] != counts.iloc[1]:
        return None
    return tuple(sorted(counts.index[counts == counts.iloc[0]]))


def _robust_z(x: pd.Series) -> pd.Series:
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    return (x - med) / mad if mad > 0 else x * 0


ANNOTATOR_COLUMNS = [
    "annotator",
    "annotations",
    "gold_items",
    "gold_accuracy",
    "agreement_with_consensus",
    "spammer_score",
    "top_confusion",
    "top_confusion_rate",
    "median_lead_time_s",
    "fast_share",
    "flagged",
    "reasons",
    "confusion_matrix",
]  # the columns even when no one has annotated yet


def annotator_table(
    r: pd.DataFrame,
    gold: pd.DataFrame,
    consensus: pd.Series,
    ds: dict,
    ann_index: dict[str, int],
    classes: list[str],
    th,
) -> pd.DataFrame:
    """Per annotator: volume, gold accuracy, agreement with consensus, spammer score, top confusion, speed."""
    rows = []
    all_lead = r["lead_time"].astype(float)
    z_all = _robust_z(pd.Series(np.log(all_lead.clip(lower=0.1)), index=all_lead.index))
    for who, g in r.groupby("annotator"):
        cons = consensus.reindex(g["take_id"]).to_numpy()
        agree = float(np.mean(g["label"].to_numpy() == cons)) if len(g) else float("nan")
        gold_g = g.merge(gold[["take_id", "gold_label"]], on="take_id")
        gold_acc = float((gold_g["label"] == gold_g["gold_label"]).mean()) if len(gold_g) else float("nan")
        conf = ds["confusion"][ann_index[str(who)]]
        support = ds["prior"] > 0.01
        c, k, rate = top_confusion(conf, support)
        sscore = spammer_score(conf, support)
        fast = float((z_all.loc[g.index] < -th.fast_lead_time_z).mean())
        reasons = []
        need = th.min_items_for_flag
        # a confusion is counted on the items whose consensus is the class (what the annotator saw of it)
        seen_c = int((cons == classes[c]).sum())
        said_k = int(((cons == classes[c]) & (g["label"].to_numpy() == classes[k])).sum())
        if sscore < th.spammer_score_max and len(g) >= need:
            reasons.append(f"spammer: Raykar-Yu score {sscore:.2f} < {th.spammer_score_max} over {len(g)} items")
        elif rate > th.confusion_rate_max and seen_c >= need:
            lo, hi = wilson(said_k, seen_c)
            reasons.append(
                f"confuses {classes[c]} -> {classes[k]} ({said_k} of {seen_c} {classes[c]} items, "
                f"95% CI {lo:.0%}-{hi:.0%})"
            )
        if len(gold_g) >= need and gold_acc < th.min_gold_accuracy:
            right = int((gold_g["label"] == gold_g["gold_label"]).sum())
            lo, hi = wilson(right, len(gold_g))
            reasons.append(
                f"gold accuracy {gold_acc:.0%} < {th.min_gold_accuracy:.0%} ({right} of {len(gold_g)} gold items, "
                f"95% CI {lo:.0%}-{hi:.0%})"
            )
        if fast > 0.5 and len(g) >= need:
            reasons.append(f"{fast:.0%} of {len(g)} annotations suspiciously fast")
        matrix = {
            classes[t]: {classes[k2]: round(float(conf[t, k2]), 3) for k2 in range(len(classes))}
            for t in range(len(classes))
            if support[t]
        }
        rows.append(
            {
                "annotator": who,
                "annotations": len(g),
                "gold_items": len(gold_g),
                "gold_accuracy": gold_acc,
                "agreement_with_consensus": agree,
                "spammer_score": sscore,
                "top_confusion": f"{classes[c]}->{classes[k]}",
                "top_confusion_rate": rate,
                "median_lead_time_s": float(g["lead_time"].median()),
                "fast_share": fast,
                "flagged": bool(reasons),
                "reasons": "; ".join(reasons) or None,
                "confusion_matrix": matrix,
            }
        )  # P(label | true class), Dawid-Skene estimate
    return pd.DataFrame(rows, columns=ANNOTATOR_COLUMNS)


def item_table(
    r: pd.DataFrame,
    gold: pd.DataFrame,
    takes: pd.DataFrame,
    classes: list[str],
    items: list[str],
    mv: tuple[np.ndarray, np.ndarray],
    ds: dict,
    th,
) -> pd.DataFrame:
    """labels.parquet: one row per accepted take, labelled or queued for re-annotation with reasons."""
    by_item: dict[str, pd.DataFrame] = {str(t): g for t, g in r.groupby("take_id")}
    none = r.iloc[0:0]
    item_pos = {t: i for i, t in enumerate(items)}
    gold_by_take = gold.set_index("take_id")
    gold_label = gold_by_take["gold_label"].to_dict()
    rows = []
    records: list[dict[str, Any]] = takes.to_dict(orient="records")  # type: ignore[assignment]
    for take in records:
        t = str(take["take_id"])
        n_frames = int(take["n_frames"])
        g = by_item.get(t, none)
        reasons: list[str] = []
        flags: list[str] = []
        if t in gold_label:
            label, conf, source = gold_label[t], 1.0, "gold"
        elif t in item_pos:
            i = item_pos[t]
            label, conf, source = (
                classes[int(ds["posterior"][i].argmax())],
                float(ds["posterior"][i].max()),
                "dawid_skene",
            )
        else:
            label, conf, source = None, 0.0, "none"
        n = len(g)
        agreement = float((g["label"] == label).mean()) if n and label else float("nan")
        onset = apex = None
        tie = None
        if n:
            onset, apex = frame_median(g["onset_frame"].dropna()), frame_median(g["apex_frame"].dropna())
            tie = vote_tie(g["label"])
            votes = pd.Series([f for fs in g["quality_flags"] for f in fs.split(",") if f]).value_counts()
            flags = sorted(str(f) for f, c in votes.items() if int(c) * 2 >= n)
        if source == "gold":  # the expert's frames, when the expert marked them
            g_on, g_apex = gold_by_take.at[t, "onset_frame"], gold_by_take.at[t, "apex_frame"]
            if pd.notna(g_on) and pd.notna(g_apex):  # type: ignore[arg-type]
                onset, apex = int(g_on), int(g_apex)  # type: ignore[arg-type]
        if label is None:
            reasons.append("no usable annotation")
        else:
            if source != "gold" and conf < th.min_confidence:
                reasons.append(f"confidence {conf:.2f} < {th.min_confidence}")
            if source != "gold" and n < th.min_annotations:
                reasons.append(f"{n} annotation(s) < {th.min_annotations}")
            if n and agreement < th.min_agreement and source != "gold":
                reasons.append(f"agreement {agreement:.2f} < {th.min_agreement}")
            if tie and source != "gold":  # Dawid-Skene weights alone do not settle a 1-1 split
                reasons.append(
                    f"tie {'-'.join(str(int((g['label'] == x).sum())) for x in tie)} ({' vs '.join(tie)}): "
                    "adjudication by a third annotator or the expert"
                )
                flags.append("tie")
            if label != take["prompted_expression"]:
                flags.append("label_differs_from_prompt")
        if onset is not None and apex is not None:
            if onset > apex:
                reasons.append(f"onset {onset:g} after apex {apex:g}")
            if not (0 <= onset < n_frames and 0 <= apex < n_frames):
                reasons.append(f"onset/apex outside the take's {n_frames} frames")
        mark_reason = checks.item_mark_reason(g) if n else None
        if mark_reason:
            reasons.append(mark_reason)
        for f in ("not_a_face", "wrong_subject", "occluded"):
            if f in flags:
                reasons.append(f"annotators report {f}")
        rows.append(
            {
                "take_id": t,
                "label": label,
                "confidence": round(conf, 4),
                "source": source,
                "label_majority": classes[int(mv[0][item_pos[t]])] if t in item_pos else None,
                "n_annotations": n,
                "agreement": round(agreement, 4) if agreement == agreement else None,
                "onset_frame": None if onset is None else int(onset),
                "apex_frame": None if apex is None else int(apex),
                "flags": ",".join(sorted(set(flags))) or None,
                "status": vocab.REANNOTATE if reasons else vocab.ACCEPTED,
                "reasons": "; ".join(reasons) or None,
            }
        )
    out = pd.DataFrame(rows)
    for col in ("onset_frame", "apex_frame"):  # frames are frames: integers, missing where no mark was usable
        if col in out:
            out[col] = out[col].astype("Int64")
    return out


def truth_figures(labels: pd.DataFrame, r: pd.DataFrame, truth_table: pd.DataFrame | None) -> dict | None:
    """Accuracy of the aggregated labels and of each annotator against the simulator's truth."""
    if truth_table is None:
        return None
    truth = truth_table.set_index("take_id")["expression"]
    lab = labels[labels["source"] == "dawid_skene"].dropna(subset=["label"])
    lab = lab[lab["take_id"].isin(truth.index)]
    if lab.empty:
        return None
    t = truth.loc[lab["take_id"]].to_numpy()
    rr = r[r["take_id"].isin(truth.index)]
    ok = labels[(labels["status"] == vocab.ACCEPTED) & labels["take_id"].isin(truth.index)]
    return {
        "items": len(lab),
        "accepted_items": len(ok),
        "accepted_label_accuracy": round(
            float((ok["label"].to_numpy() == truth.loc[ok["take_id"]].to_numpy()).mean()), 4
        )
        if len(ok)
        else None,
        "dawid_skene_accuracy": round(float((lab["label"].to_numpy() == t).mean()), 4),
        "majority_vote_accuracy": round(float((lab["label_majority"].to_numpy() == t).mean()), 4),
        "annotator_accuracy": {
            who: round(float((g["label"].to_numpy() == truth.loc[g["take_id"]].to_numpy()).mean()), 4)
            for who, g in rr.groupby("annotator")
        },
    }


@dataclass
class Verdicts:
    """What QA concludes from one set of ratings, and the intermediates its report needs."""

    r_all: pd.DataFrame  # every kept rating (gold and unsure included), latest per annotator and take
    r: pd.DataFrame  # the ratings agreement and aggregation use (no gold, no unsure)
    gold: pd.DataFrame
    superseded: int  # ratings replaced by the same annotator's later one
    annotator_ids: list[str]
    ann_index: dict[str, int]
    data: np.ndarray  # reliability matrix (annotator x item)
    ds: dict  # Dawid-Skene result
    labels: pd.DataFrame  # item_table: status accepted | reannotate per take
    annotators: pd.DataFrame  # annotator_table with the annotation checks merged in: `flagged`

    @property
    def queue(self) -> list[str]:
        return sorted(self.labels.loc[self.labels["status"] == vocab.REANNOTATE, "take_id"])

    @property
    def flagged(self) -> set[str]:
        return set(self.annotators.loc[self.annotators["flagged"], "annotator"].astype(str))


def verdicts(parsed: Parsed, takes: pd.DataFrame, classes: list[str], th) -> Verdicts:
    """Labels, re-annotation queue and flagged annotators from parsed ratings: the QA stage's one judgement.

    Why one function: the simulator's second round answers the queue this computes, so it must be
    the queue the stage writes (same latest-rating rule, same checks).
    """
    r_all, superseded = latest_per_annotator(parsed.ratings)
    is_gold = r_all["ground_truth"].astype(bool)  # bool even when empty (an empty object column cannot index)
    gold = r_all[is_gold].drop_duplicates("take_id").rename(columns={"label": "gold_label"})
    r = r_all[~is_gold & (r_all["label"] != UNSURE)].reset_index(drop=True)
    items = sorted(r["take_id"].unique())
    annotators = sorted(r["annotator"].unique())
    ann_index = {a: i for i, a in enumerate(annotators)}
    cls_index = {c: i for i, c in enumerate(classes)}
    codes = pd.DataFrame(
        {
            "item": r["take_id"].map({t: i for i, t in enumerate(items)}),
            "annotator": r["annotator"].map(ann_index),
            "label": r["label"].map(cls_index),
        }
    ).astype(int)  # int even when empty
    data = ag.reliability_matrix(codes, len(classes))
    counts = vote_counts(
        codes["item"].to_numpy(),
        codes["annotator"].to_numpy(),
        codes["label"].to_numpy(),
        len(items),
        len(annotators),
        len(classes),
    )
    mv = majority_vote(counts)
    ds = dawid_skene(counts)
    consensus = pd.Series([classes[int(k)] for k in ds["posterior"].argmax(1)], index=items)
    ann = annotator_table(r, gold, consensus, ds, ann_index, classes, th)
    ann = checks.merge_checks(
        ann, checks.annotator_checks(r, parsed.predictions, th.min_lead_time_s), th.min_lead_time_s
    )
    labels = item_table(r, gold, takes, classes, items, mv, ds, th)
    return Verdicts(
        r_all=r_all,
        r=r,
        gold=gold,
        superseded=superseded,
        annotator_ids=annotators,
        ann_index=ann_index,
        data=data,
        ds=ds,
        labels=labels,
        annotators=ann,
    )


def load_round(path: Path) -> list[dict]:
    """A re-annotation round's export; unlike a snapshot it may hold no task (an empty queue)."""
    return load_export(path, allow_empty=True)


def merge_rounds(first: Parsed, second: Parsed) -> Parsed:
    """One snapshot from two rounds: the same takes with every round's annotations (the same annotators)."""
    merged = Parsed(
        ratings=pd.concat([first.ratings, second.ratings], ignore_index=True),
        excluded=first.excluded + second.excluded,
        tasks=first.tasks,
        tasks_without_annotation=first.tasks_without_annotation,
    )
    for reason, where in [*first.examples.items(), *second.examples.items()]:
        merged.examples.setdefault(reason, []).extend(where)
    return merged


class TruthError(PipelineError, ValueError):
    """qa.truth names something that is not a truth table."""


def read_truth(layout: Layout, key_value: str) -> pd.DataFrame | None:
    """The simulator's truth table (`qa.truth`), optional: empty means none (a lab's recordings have none).

    A path that is a folder, lacks the columns or is missing is one line naming qa.truth, never a traceback.
    """
    if not key_value.strip():
        return None
    path = layout.resolve(key_value)
    if path.is_dir():
        raise TruthError(f'params.yaml: qa.truth {key_value!r} is a folder, not a CSV; set it to "" for no truth')
    if not path.is_file():
        return None  # declared by DVC when set: absent only outside `dvc repro` (e.g. a test project)
    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise TruthError(f"{path}: qa.truth is not a readable CSV ({(str(e).splitlines() or ['?'])[0]})") from e
    missing = [c for c in ("take_id", "expression") if c not in table.columns]
    if missing:
        raise TruthError(f"{path}: qa.truth has no column {missing[0]!r}")
    return table


def run(layout: Layout, params: Params, snapshot: str | Path | None = None) -> dict:
    """The qa stage's shell: reads the snapshot (and the re-annotation round) named in params through the
    layout, writes labels, queue and reports. `snapshot` replaces qa.snapshot (no re-annotation round then)."""
    manifest = pd.read_parquet(layout.manifest)
    reannotation = None
    if snapshot is None:
        refuse_simulated_labels_on_real_data(manifest, params.qa, layout)
        reannotation = layout.resolve(params.qa.reannotation_snapshot) if params.qa.reannotation_snapshot else None
    snapshot = Path(snapshot) if snapshot else layout.resolve(params.qa.snapshot)
    config = LabelConfig.load(layout.label_config)
    # An empty snapshot is an error (a failed pull) unless it is the project's explicit empty export:
    # an imported dataset labelled by `split.labels: dataset` that no one has annotated yet.
    tasks = load_export(snapshot, allow_empty=snapshot.resolve() == layout.empty_export.resolve())
    rounds = [load_round(reannotation)] if reannotation is not None and reannotation.is_file() else []
    truth = read_truth(layout, params.qa.truth)
    result = assess(tasks, rounds, manifest, config, params.qa.thresholds, truth)
    result.report["snapshot"] = layout.relative(snapshot)
    io.write_parquet(layout.labels, result.labels)
    io.write_csv(
        layout.reannotation_queue, result.labels[result.labels["status"] == vocab.REANNOTATE][["take_id", "reasons"]]
    )
    io.write_json(layout.qa_report, with_provenance(result.report, params, "qa"))
    io.write_text(layout.qa_markdown, render_markdown(result.report, result.annotators, result.classes))
    _plot_annotators(result.annotators, layout.qa_plot)
    rep = result.report
    log.info(
        "qa: alpha %.3f (%s), %d labels accepted, %d to re-annotate; flagged annotators: %s",
        rep["agreement"]["krippendorff_alpha"],
        rep["agreement"]["verdict"],
        rep["labels"]["accepted"],
        rep["labels"]["reannotate"],
        ", ".join(f"{a['annotator']} ({a['reasons']})" for a in rep["annotators_flagged"]) or "none",
    )
    return rep


@dataclass
class Assessment:
    labels: pd.DataFrame
    annotators: pd.DataFrame
    report: dict
    classes: list[str]


def assess(
    tasks: list[dict],
    rounds: list[list[dict]],
    manifest: pd.DataFrame,
    config: LabelConfig,
    th,
    truth: pd.DataFrame | None = None,
) -> Assessment:
    """QA's core: exports (the snapshot, then re-annotation rounds) and the manifest in; labels, the
    annotator table and the report out. No paths."""
    classes = [c for c in config.expressions if c != UNSURE]
    takes = manifest[manifest["status"] == vocab.ACCEPTED]
    n_frames = dict(zip(takes["take_id"], takes["n_frames"].astype(int)))
    parsed = parse_export(tasks, config, set(takes["take_id"]), n_frames)
    counts = {"snapshot": len(parsed.ratings)}
    for k, extra in enumerate(rounds, start=1):
        before = len(parsed.ratings)
        parsed = merge_rounds(parsed, parse_export(extra, config, set(takes["take_id"]), n_frames))
        counts["reannotation" if k == 1 else f"reannotation_{k}"] = len(parsed.ratings) - before
    v = verdicts(parsed, takes, classes, th)
    r_all, r, gold, ann, labels, ann_index, annotators = (
        v.r_all,
        v.r,
        v.gold,
        v.annotators,
        v.labels,
        v.ann_index,
        v.annotator_ids,
    )
    if v.superseded:
        parsed.excluded["superseded_by_the_same_annotators_later_rating"] += v.superseded
    unsure = int((r_all["label"] == UNSURE).sum())
    data, ds = v.data, v.ds

    alpha = ag.krippendorff_alpha_nominal(data)
    per_class = {
        classes[c]: (round(a, 4) if a == a else None) for c, a in ag.per_class_alpha(data, len(classes)).items()
    }
    fk, fk_items, fk_raters = ag.fleiss_on_complete_items(data, len(classes))
    class_share = r["label"].value_counts(normalize=True).reindex(classes, fill_value=0).round(4).to_dict()
    keep = [ann_index[a] for a in ann.loc[~ann["flagged"], "annotator"]]
    alpha_clean = ag.krippendorff_alpha_nominal(data[keep]) if len(keep) >= 2 else float("nan")
    verdict = (
        "good"
        if alpha >= th.alpha_good
        else "acceptable (tentative conclusions only)"
        if alpha >= th.alpha_acceptable
        else "unreliable"
    )
    balanced = [a for a in per_class.values() if a is not None]
    mark_rows = pd.DataFrame(parsed.mark_problem_rows, columns=["take_id", "annotator", "problem"])
    report = {
        "snapshot": None,
        "tasks": parsed.tasks,
        "tasks_without_annotation": parsed.tasks_without_annotation,
        "annotations_used": len(r),
        "gold_annotations": len(gold),
        "unsure_answers": unsure,
        "excluded": dict(sorted(parsed.excluded.items())),
        "excluded_examples": parsed.examples,
        "gold": {
            "items": len(gold),
            "changed": parsed.gold_changed,
            "note": "gold answers are mvfer's (never stored in Label Studio); pull adds them with a fingerprint, and a "
            "gold answer whose fingerprint no longer matches is listed here and not used",
        },
        "agreement": {
            "krippendorff_alpha": round(alpha, 4),
            "verdict": verdict,
            "krippendorff_alpha_without_flagged_annotators": round(alpha_clean, 4),
            "krippendorff_alpha_per_class": per_class,
            "krippendorff_alpha_class_balanced": round(float(np.mean(balanced)), 4) if balanced else None,
            "fleiss_kappa": round(fk, 4),
            "fleiss_items": fk_items,
            "fleiss_raters_per_item": fk_raters,
            "cohen_kappa_pairwise": ag.pairwise_cohen(data, annotators),
            "label_share": class_share,
            "skew_caveat": "alpha and kappa fall for rare classes even with high raw agreement (a rare class's "
            "expected agreement is small); read the per-class and class-balanced figures beside the overall one",
        },
        "aggregation": {
            "method": "dawid_skene",
            "iterations": int(ds["iterations"]),
            "frames": "median of the annotators' marks; with an even number of marks the lower middle one "
            "(the earlier frame); gold items carry the expert's frames",
            "ties": int(labels["flags"].fillna("").str.contains("tie").sum()) if len(labels) else 0,
            "agreement_with_majority_vote": round(float((labels["label"] == labels["label_majority"]).mean()), 4)
            if len(labels)
            else None,
            "mean_confidence": round(float(labels["confidence"].mean()), 4) if len(labels) else None,
        },
        "annotators": ann.to_dict(orient="records"),
        "annotators_flagged": ann.loc[ann["flagged"], ["annotator", "reasons"]].to_dict(orient="records"),
        "annotation_checks": checks.summary(r, parsed.mark_problems, parsed.predictions, th.min_lead_time_s),
        "mark_problems_by_annotator": {
            str(a): {str(k): int(n) for k, n in g["problem"].value_counts().items()}
            for a, g in mark_rows.groupby("annotator")
        },
        "mark_problem_examples": mark_rows.head(20).to_dict(orient="records"),
        "annotations_per_round": counts,
        "labels": {
            "accepted": int((labels["status"] == vocab.ACCEPTED).sum()),
            "reannotate": int((labels["status"] == vocab.REANNOTATE).sum()),
            "accepted_share": round(float((labels["status"] == vocab.ACCEPTED).mean()), 4) if len(labels) else None,
            "differs_from_prompt": int(labels["flags"].fillna("").str.contains("label_differs_from_prompt").sum()),
        },
        "against_truth": truth_figures(labels, r, truth),
    }
    return Assessment(labels, ann, report, classes)


def render_markdown(rep: dict, ann: pd.DataFrame, classes: list[str]) -> str:
    a = rep["agreement"]
    lines = [
        "# Annotation QA",
        "",
        f"Snapshot `{rep['snapshot']}`: {rep['tasks']} tasks, {rep['annotations_used']} annotations used, "
        f"{rep['gold_annotations']} gold, {rep['unsure_answers']} 'unsure'.",
        "",
        "## Agreement",
        "",
        f"- Krippendorff's alpha (nominal): **{a['krippendorff_alpha']}** ({a['verdict']}); "
        f"class-balanced {a['krippendorff_alpha_class_balanced']}",
        f"- without the flagged annotators: {a['krippendorff_alpha_without_flagged_annotators']}",
        f"- Fleiss' kappa: {a['fleiss_kappa']} over {a['fleiss_items']} items with "
        f"{a['fleiss_raters_per_item']} ratings each",
        f"- {a['skew_caveat']}.",
        "",
        "| class | alpha (one vs rest) | share of labels |",
        "|---|---|---|",
    ]
    lines += [f"| {c} | {a['krippendorff_alpha_per_class'].get(c)} | {a['label_share'].get(c)} |" for c in classes]
    lines += [
        "",
        "## Annotators",
        "",
        "| annotator | annotations | gold acc. | agreement w/ consensus | spammer score | top confusion "
        "| median lead time (s) | flag |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in ann.itertuples():
        lines.append(
            f"| {row.annotator} | {row.annotations} | {row.gold_accuracy:.2f} ({row.gold_items} items) "
            f"| {row.agreement_with_consensus:.2f} | {row.spammer_score:.2f} "
            f"| {row.top_confusion} ({row.top_confusion_rate:.2f}) | {row.median_lead_time_s:.1f} "
            f"| {row.reasons or ''!s} |"
        )
    lab = rep["labels"]
    lines += [
        "",
        "## Labels",
        "",
        f"{lab['accepted']} accepted, {lab['reannotate']} queued for re-annotation "
        f"(`data/processed/reannotation_queue.csv`), {lab['differs_from_prompt']} differ from the prompted expression.",
        "",
    ]
    mp = rep.get("mark_problems_by_annotator") or {}
    lines += ["## Mark problems (onset/apex)", ""]
    if mp:
        from pipeline.qa.checks import MARK_PROBLEM_TEXT

        lines += ["| annotator | problem | annotations |", "|---|---|---|"]
        lines += [
            f"| {who} | {MARK_PROBLEM_TEXT.get(k, k)} | {n} |"
            for who, probs in sorted(mp.items())
            for k, n in sorted(probs.items())
        ]
        lines += [
            "",
            "Examples: "
            + ", ".join(
                f"{e['take_id']} ({e['annotator']}: {MARK_PROBLEM_TEXT.get(e['problem'], e['problem'])})"
                for e in rep.get("mark_problem_examples", [])[:8]
            ),
            "",
        ]
    else:
        lines += ["None: every kept annotation has one onset and one apex inside its take, in order.", ""]
    g = rep.get("gold") or {}
    lines += ["## Gold", "", f"{g.get('items', 0)} gold items (the expert's label and frames)."]
    for c in g.get("changed", []):
        lines.append(
            f"- **gold answer changed** after pull: take {c['take_id']} (annotation {c['annotation_id']}); not used"
        )
    lines.append("")
    if rep["excluded"]:
        lines += ["## Excluded annotations", ""] + [f"- {k}: {v}" for k, v in rep["excluded"].items()] + [""]
    t = rep.get("against_truth")
    if t:
        lines += [
            "## Against the simulator's truth",
            "",
            f"Dawid-Skene {t['dawid_skene_accuracy']}, majority vote {t['majority_vote_accuracy']} "
            f"on {t['items']} items.",
            "",
        ]
    return "\n".join(lines)


def _plot_annotators(ann: pd.DataFrame, out: Path) -> None:
    from pipeline.utils.plots import plt, save

    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(ann))
    for k, (col, name) in enumerate(
        (
            ("gold_accuracy", "gold accuracy"),
            ("agreement_with_consensus", "agreement with consensus"),
            ("spammer_score", "spammer score"),
        )
    ):
        ax.bar(x + (k - 1) * 0.27, ann[col].fillna(0), width=0.27, label=name)
    ax.set_xticks(x, ann["annotator"])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("annotator id")
    ax.legend(fontsize=8)
    save(fig, out)


if __name__ == "__main__":
    from pipeline.stage import main

    raise SystemExit(main(run))
