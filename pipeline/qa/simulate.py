"""Simulated annotators for the built-in dataset: a Label Studio full-JSON export, as a pull writes.

Annotators of known reliability label each accepted take, so QA can run on a fresh machine and
its findings can be checked against the simulator's truth: a careful one, a noisy one, one who
confuses fear and surprise, a spammer. Some annotations are cancelled (skipped), some tasks keep
drafts, and a share of tasks are gold: an expert's annotation marked `ground_truth`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.params import AnnotatorProfile, Params, QASimParams

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=timezone.utc)


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
    res = [{"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}},
           {"from_name": "onset_frame", "to_name": "video", "type": "number", "value": {"number": onset}},
           {"from_name": "apex_frame", "to_name": "video", "type": "number", "value": {"number": apex}}]
    if flags:
        res.append({"from_name": "quality", "to_name": "video", "type": "choices", "value": {"choices": flags}})
    return res


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
        t = truth.loc[row.take_id]
        true_label = t["expression"]
        n = int(row.n_frames)
        onset = int(t["onset_frame"]) if t["onset_frame"] >= 0 else 0
        apex = int(t["apex_frame"]) if t["apex_frame"] >= 0 else n - 1
        chosen = rng.choice(len(p.annotators), size=min(p.annotators_per_task, len(p.annotators)), replace=False)
        annotations = []
        gold = rng.random() < p.gold_fraction
        if gold:
            annotations.append({"id": ann_id, "completed_by": p.expert_id, "result": _result(true_label, onset, apex, []),
                                "was_cancelled": False, "ground_truth": True, "lead_time": 60.0,
                                "created_at": clock.isoformat(), "updated_at": clock.isoformat()})
            ann_id += 1
        for k in sorted(chosen):
            prof = p.annotators[k]
            clock += timedelta(seconds=float(rng.uniform(5, 90)))
            cancelled = rng.random() < p.cancel_rate
            spam = prof.kind == "spammer"
            label = _label(rng, true_label, prof, classes)
            flags = [str(rng.choice(["blurred", "occluded"]))] if spam and rng.random() < 0.3 else []
            if not spam and label != row.prompted_expression and rng.random() < 0.5:
                flags.append("not_as_prompted")
            lead = float(rng.lognormal(np.log(prof.mean_lead_time_s), 0.3))
            annotations.append({
                "id": ann_id, "completed_by": prof.id,
                "result": [] if cancelled else _result(label, _frame(rng, onset, prof.frame_sigma, n, spam), _frame(rng, apex, prof.frame_sigma, n, spam), flags),
                "was_cancelled": cancelled, "ground_truth": False, "lead_time": round(lead, 2),
                "created_at": clock.isoformat(), "updated_at": clock.isoformat(),
            })
            ann_id += 1
        drafts = [{"id": task_id, "user": p.annotators[0].id, "result": []}] if rng.random() < p.draft_rate else []
        tasks.append({
            "id": task_id,
            "data": {"video": f"/data/local-files/?d=takes/{row.take_id}.mp4", "take_id": row.take_id,
                     "prompted_expression": row.prompted_expression, "fps": float(row.fps)},
            "annotations": annotations, "drafts": drafts,
            "predictions": [{"model_version": "prompted", "result": _result(row.prompted_expression, 0, n - 1, [])[:1]}],
        })
    return tasks


def run(params: Params, manifest_path: Path | None = None, out: Path | None = None) -> int:
    """The annotate_sim stage: write the simulated export atomically; returns the task count."""
    import json

    from pipeline import paths
    from pipeline.qa.export import UNSURE, LabelConfig
    from pipeline.utils import io

    manifest = pd.read_parquet(manifest_path or paths.MANIFEST)
    takes = manifest[manifest["status"] == "accepted"]
    truth = pd.read_csv(paths.resolve(params.qa.truth))
    classes = [c for c in LabelConfig.load(paths.LABEL_CONFIG).expressions if c not in (UNSURE, "neutral")]
    tasks = simulate_export(takes, truth, params.annotate_sim, classes)
    io.write_text(out or paths.ANNOTATIONS_SIM, json.dumps(tasks, indent=1))
    return len(tasks)
