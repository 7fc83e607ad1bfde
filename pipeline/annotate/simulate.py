"""Simulated annotators for the built-in dataset: a Label Studio full-JSON export, as a pull writes.

Annotators of known reliability label each accepted take, so QA can run on a fresh machine and
its findings can be checked against the simulator's truth: a careful one, a noisy one, one who
confuses fear and surprise, a spammer. Some annotations are cancelled (skipped), some tasks keep
drafts, and a share of tasks are gold: an expert's annotation marked `ground_truth`.

A second round answers QA's re-annotation queue as a lab would after `annotate push --queue`: the
first round is assessed exactly as the QA stage assesses it, and the queued takes go to the
annotators QA did not flag, `round2_annotators_per_task` each, in a companion project's export.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from pipeline import vocab
from pipeline.annotate.export import GOLD_KEY, gold_digest
from pipeline.layout import Layout
from pipeline.params import AnnotatorProfile, Params, QASimParams

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def _label(rng: np.random.Generator, truth: str, prof: AnnotatorProfile, classes: list[str]) -> str:
    if prof.kind == "spammer":
        return str(rng.choice(classes))
    if prof.kind == "confuser" and truth in ("fear", "surprise") and rng.random() < prof.confusion_rate:
        return "surprise" if truth == "fear" else "fear"
    if rng.random() < prof.accuracy:
        return truth
    return str(rng.choice([c for c in classes if c != truth]))


def _frame(rng: np.random.Generator, value: int, sigma: float, n_frames: int, spam: bool) -> int:
    if spam:
        return int(rng.integers(0, n_frames))
    return int(np.clip(round(value + rng.normal(0, sigma)), 0, n_frames - 1))


def _result(label: str, onset: int, apex: int, flags: list[str]) -> list[dict]:
    res = [
        {"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}},
        {"from_name": "onset_frame", "to_name": "video", "type": "number", "value": {"number": onset}},
        {"from_name": "apex_frame", "to_name": "video", "type": "number", "value": {"number": apex}},
    ]
    if flags:
        res.append({"from_name": "quality", "to_name": "video", "type": "choices", "value": {"choices": flags}})
    return res


def _annotation(
    rng: np.random.Generator,
    ann_id: int,
    prof: AnnotatorProfile,
    true_label: str,
    prompted: str,
    onset: int,
    apex: int,
    n: int,
    clock: datetime,
    cancel_rate: float,
    classes: list[str],
) -> dict:
    """One annotator's answer to one task, as Label Studio stores it."""
    cancelled = rng.random() < cancel_rate
    spam = prof.kind == "spammer"
    label = _label(rng, true_label, prof, classes)
    flags = [str(rng.choice(["blurred", "occluded"]))] if spam and rng.random() < 0.3 else []
    if not spam and label != prompted and rng.random() < 0.5:
        flags.append("not_as_prompted")
    lead = float(rng.lognormal(np.log(prof.mean_lead_time_s), 0.3))
    return {
        "id": ann_id,
        "completed_by": prof.id,
        "result": []
        if cancelled
        else _result(
            label, _frame(rng, onset, prof.frame_sigma, n, spam), _frame(rng, apex, prof.frame_sigma, n, spam), flags
        ),
        "was_cancelled": cancelled,
        "ground_truth": False,
        "lead_time": round(lead, 2),
        "created_at": clock.isoformat(),
        "updated_at": clock.isoformat(),
    }


def _task(task_id: int, row, annotations: list[dict], drafts: list[dict], n: int) -> dict:
    return {
        "id": task_id,
        "data": {
            "video": f"/data/local-files/?d=takes/{row.take_id}.mp4",
            "take_id": row.take_id,
            "prompted_expression": row.prompted_expression,
            "fps": float(row.fps),
        },
        "annotations": annotations,
        "drafts": drafts,
        "predictions": [{"model_version": "prompted", "result": _result(row.prompted_expression, 0, n - 1, [])[:1]}],
    }


def _onset_apex(t: pd.Series, n: int) -> tuple[int, int]:
    return (int(t["onset_frame"]) if t["onset_frame"] >= 0 else 0), (
        int(t["apex_frame"]) if t["apex_frame"] >= 0 else n - 1
    )


def simulate_export(takes: pd.DataFrame, truth: pd.DataFrame, p: QASimParams, classes: list[str]) -> list[dict]:
    """Tasks with annotations, as Label Studio's full JSON export lays them out.

    takes: accepted manifest rows (take_id, path, prompted_expression, fps, n_frames);
    truth: the simulator's expression, onset and apex per take.
    """
    rng = np.random.default_rng(p.seed)
    truth = truth.set_index("take_id")
    tasks, ann_id = [], 1
    clock = T0
    for task_id, row in enumerate(takes.sort_values("take_id").itertuples(index=False), start=1):
        t = truth.loc[row.take_id]  # type: ignore[index]
        true_label = str(t["expression"])
        n = int(row.n_frames)  # type: ignore[arg-type]
        onset, apex = _onset_apex(t, n)
        chosen = rng.choice(len(p.annotators), size=min(p.annotators_per_task, len(p.annotators)), replace=False)
        prompted = str(row.prompted_expression)
        annotations = []
        gold = rng.random() < p.gold_fraction
        if gold:
            result = _result(true_label, onset, apex, [])  # as pull adds mvfer's gold answers: fingerprinted
            annotations.append(
                {
                    "id": ann_id,
                    "completed_by": p.expert_id,
                    "result": result,
                    "was_cancelled": False,
                    "ground_truth": True,
                    "lead_time": 60.0,
                    "created_at": clock.isoformat(),
                    "updated_at": clock.isoformat(),
                    GOLD_KEY: {"source": "simulator truth", "sha256": gold_digest(result)},
                }
            )
            ann_id += 1
        for k in sorted(chosen):
            clock += timedelta(seconds=float(rng.uniform(5, 90)))
            annotations.append(
                _annotation(
                    rng,
                    ann_id,
                    p.annotators[k],
                    true_label,
                    prompted,
                    onset,
                    apex,
                    n,
                    clock,
                    p.cancel_rate,
                    classes,
                )
            )
            ann_id += 1
        drafts = [{"id": task_id, "user": p.annotators[0].id, "result": []}] if rng.random() < p.draft_rate else []
        tasks.append(_task(task_id, row, annotations, drafts, n))
    return tasks


def round1_verdicts(tasks: list[dict], takes: pd.DataFrame, config, th) -> tuple[list[str], set[str]]:
    """The first round as the QA stage judges it: (queued take ids, flagged annotator ids), by its own function."""
    from pipeline.annotate.export import UNSURE, parse_export
    from pipeline.qa.stage import verdicts  # the QA stage's own judgement, so round 2 answers the queue it writes

    classes = [c for c in config.expressions if c != UNSURE]
    n_frames = dict(zip(takes["take_id"], takes["n_frames"].astype(int)))
    v = verdicts(parse_export(tasks, config, set(takes["take_id"]), n_frames), takes, classes, th)
    return v.queue, v.flagged


def simulate_round2(
    takes: pd.DataFrame,
    truth: pd.DataFrame,
    p: QASimParams,
    classes: list[str],
    queue: list[str],
    flagged: set[str],
    first_annotation_id: int,
) -> list[dict]:
    """The re-annotation queue answered by the annotators QA trusts: a companion project's export."""
    rng = np.random.default_rng([p.seed, 2])
    trusted = [a for a in p.annotators if str(a.id) not in flagged]
    truth = truth.set_index("take_id")
    rows = takes.set_index("take_id")
    tasks, ann_id, clock = [], first_annotation_id, T0 + timedelta(days=14)
    for task_id, take in enumerate(queue, start=1):
        row = rows.loc[take]
        row = pd.Series({**row.to_dict(), "take_id": take})
        t: pd.Series = truth.loc[take]  # type: ignore[assignment]
        n = int(row["n_frames"])
        onset, apex = _onset_apex(t, n)
        chosen: list[int] | np.ndarray = (
            rng.choice(len(trusted), size=min(p.round2_annotators_per_task, len(trusted)), replace=False)
            if trusted
            else []
        )
        annotations = []
        for k in sorted(chosen):
            clock += timedelta(seconds=float(rng.uniform(5, 90)))
            annotations.append(
                _annotation(
                    rng,
                    ann_id,
                    trusted[k],
                    str(t["expression"]),
                    str(row["prompted_expression"]),
                    onset,
                    apex,
                    n,
                    clock,
                    p.cancel_rate,
                    classes,
                )
            )
            ann_id += 1
        tasks.append(_task(task_id, row, annotations, [], n))
    return tasks


def simulate(
    manifest: pd.DataFrame, truth: pd.DataFrame, params: Params, config
) -> tuple[list[dict], list[dict], list[str]]:
    """The annotate_sim core: both rounds' exports and the annotators trusted for the second round."""
    from pipeline.annotate.export import UNSURE

    takes = manifest[manifest["status"] == vocab.ACCEPTED]
    truth = with_dataset_truth(truth, takes)
    classes = [c for c in config.expressions if c not in (UNSURE, "neutral")]
    p = params.annotate_sim
    tasks = simulate_export(takes, truth, p, classes)
    queue, flagged = (
        round1_verdicts(tasks, takes, config, params.qa.thresholds) if p.round2_annotators_per_task else ([], set())
    )
    last_id = max((a["id"] for t in tasks for a in t["annotations"]), default=0)
    round2 = simulate_round2(takes, truth, p, classes, queue, flagged, last_id + 1)
    return tasks, round2, sorted(str(a.id) for a in p.annotators if str(a.id) not in flagged)


def run(layout: Layout, params: Params) -> dict:
    """The annotate_sim stage's shell: both rounds' exports, written atomically; returns their task counts."""
    import json

    from pipeline.annotate.export import LabelConfig
    from pipeline.qa.guard import refuse_simulated_labels_on_real_data
    from pipeline.utils import io

    manifest = pd.read_parquet(layout.manifest)
    refuse_simulated_labels_on_real_data(manifest, params.qa, layout)
    tasks, round2, trusted = simulate(
        manifest, pd.read_csv(layout.resolve(params.qa.truth)), params, LabelConfig.load(layout.label_config)
    )
    io.write_text(layout.annotations_sim, json.dumps(tasks, indent=1))
    io.write_text(layout.annotations_sim_round2, json.dumps(round2, indent=1))
    return {"round1_tasks": len(tasks), "round2_tasks": len(round2), "round2_annotators": trusted}


def with_dataset_truth(truth: pd.DataFrame, takes: pd.DataFrame) -> pd.DataFrame:
    """Truth rows for simulator takes its truth table lacks (a take copied into a simulated raw folder):
    their label or prompt, no onset/apex.

    Why: annotate_sim runs only on simulator takes (qa.guard), but a simulated raw folder can gain a
    take by hand; its simulated annotators then answer the prompt rather than stop the stage.
    """
    missing = takes[~takes["take_id"].isin(truth["take_id"])]
    if missing.empty:
        return truth
    label = missing["dataset_label"] if "dataset_label" in missing else missing["prompted_expression"]
    extra = pd.DataFrame(
        {"take_id": missing["take_id"].to_numpy(), "expression": label.to_numpy(), "onset_frame": -1, "apex_frame": -1}
    )
    return pd.concat([truth, extra], ignore_index=True)


if __name__ == "__main__":
    from pipeline.stage import main

    raise SystemExit(main(run))
