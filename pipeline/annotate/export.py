"""Label Studio full-JSON exports: load, recognise the wrong format, validate against our config.

The server accepts any result, so every annotation is checked here against the labeling config;
what cannot be used is excluded and counted by reason, never silently dropped. Onset/apex come from
`<TimelineLabels name="marks">` (1-based player frames, converted to 0-based take frames by
pipeline/annotate/frames.py) or, in exports made with the old config, from the `onset_frame` /
`apex_frame` number fields (already 0-based). A missing or out-of-range mark keeps the label usable
but drops the frame and is counted under `mark_problems`.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.annotate.frames import in_range, take_frame
from pipeline.errors import PipelineError

UNSURE = "unsure"
MARKS = "marks"  # the <TimelineLabels> name in annotations/labeling_config.xml
MARK_LABELS = ("onset", "apex", "offset")


class ExportError(PipelineError, ValueError):
    """An export that cannot be used at all; the message names the file and what is wrong."""


@dataclass(frozen=True)
class LabelConfig:
    """What the labeling config allows: the expression choices and the quality flags."""

    expressions: tuple[str, ...]
    quality_flags: tuple[str, ...]
    marks: tuple[str, ...] = ()  # timeline labels (onset, apex, offset); empty in the old number-field config

    @classmethod
    def load(cls, path: Path) -> LabelConfig:
        root = ET.parse(path).getroot()
        choices = {c.get("name"): tuple(ch.get("value") for ch in c.iter("Choice")) for c in root.iter("Choices")}
        for name in ("expression", "quality"):
            if name not in choices:
                raise ExportError(f'{path}: the labeling config has no <Choices name="{name}">')
        marks = tuple(
            lab.get("value")
            for tl in root.iter("TimelineLabels")
            if tl.get("name") == MARKS
            for lab in tl.iter("Label")
        )
        return cls(
            expressions=tuple(str(c) for c in choices["expression"]),
            quality_flags=tuple(str(c) for c in choices["quality"]),
            marks=tuple(str(m) for m in marks),
        )


@dataclass
class Parsed:
    ratings: pd.DataFrame  # one row per usable annotation
    excluded: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    tasks: int = 0
    tasks_without_annotation: int = 0
    mark_problems: Counter = field(default_factory=Counter)  # kept annotations whose onset/apex could not be used
    mark_problem_rows: list[dict] = field(default_factory=list)  # take, annotator, problem: what qa.md lists
    gold_changed: list[dict] = field(
        default_factory=list
    )  # gold answers whose result no longer matches its fingerprint
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)  # take_id, model_version, label, score

    def exclude(self, reason: str, where: str) -> None:
        self.excluded[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)


def load_export(path: Path, allow_empty: bool = False) -> list[dict]:
    """The task list of a full JSON export; JSON_MIN, truncated and empty files are clear errors.

    allow_empty: `[]` is a valid answer (a re-annotation round with an empty queue, or the shipped
    empty export standing for "no one has annotated yet"); a blank file stays an error.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"{path}: file not found") from None
    if not text.strip():
        raise ExportError(f"{path}: the export is empty (0 tasks)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ExportError(
            f"{path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}); truncated download?"
        ) from None
    if not isinstance(data, list):
        raise ExportError(
            f"{path}: expected a list of tasks (Label Studio 'JSON' export), got a JSON {type(data).__name__}"
        )
    if not data and not allow_empty:
        raise ExportError(f"{path}: the export is empty (0 tasks)")
    first = data[0] if data else None
    if isinstance(first, dict) and "annotations" not in first and "data" not in first:
        raise ExportError(
            f"{path}: this looks like a JSON_MIN export (no 'annotations'/'data' keys); "
            "export with export_type='JSON' (full), which keeps annotators, cancellations and types"
        )
    return data


GOLD_KEY = "mvfer_gold"  # on gold annotations that pull adds from mvfer's gold file: {"source", "sha256"}


def gold_digest(result: list[dict]) -> str:
    """Fingerprint of a gold answer's result (label and marks), to notice a gold answer changed after pull."""
    return hashlib.sha256(json.dumps(result, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _annotator(ann: dict) -> str | None:
    account = ann.get("completed_by_account")  # pull writes the account (e-mail) beside Label Studio's user id
    if account:
        return str(account)
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("id") or who.get("email")
    return None if who in (None, "") else str(who)


def _values(result: list[dict], name: str, kind: str) -> list:
    out: list = []
    for r in result:
        if r.get("from_name") == name:
            v = r.get("value", {})
            out.extend(v.get("choices", []) if kind == "choices" else [v.get("number")])
    return out


def timeline_marks(result: list[dict]) -> dict[str, list[int]]:
    """0-based take frames marked per timeline label (a range counts by its first frame)."""
    marks: dict[str, list[int]] = {}
    for r in result:
        if r.get("from_name") != MARKS or r.get("type") != "timelinelabels":
            continue
        v = r.get("value") or {}
        for name in v.get("timelinelabels") or []:
            for rng in v.get("ranges") or []:
                try:
                    marks.setdefault(name, []).append(take_frame(rng.get("start")))
                except (TypeError, ValueError):
                    marks.setdefault(name, [])
    return marks


def onset_apex(result: list[dict], n_frames: int | None) -> tuple[int | None, int | None, int | None, str | None, str]:
    """(onset, apex, offset, problem, source) of one annotation, in 0-based take frames.

    problem: None, "missing" (no onset or no apex), "several_marks", "out_of_range" or "onset_after_apex";
    frames that cannot be trusted are returned as None.
    """
    marks = timeline_marks(result)
    if marks:
        source = "timeline"
        if any(len(marks.get(k, [])) > 1 for k in MARK_LABELS):
            return None, None, None, "several_marks", source
        onset, apex, offset = (next(iter(marks.get(k, [])), None) for k in MARK_LABELS)
    else:
        numbers = {n: next(iter(_values(result, n, "number")), None) for n in ("onset_frame", "apex_frame")}
        source = "number" if any(v is not None for v in numbers.values()) else "none"
        onset, apex = (None if (v := numbers[n]) is None else int(v) for n in ("onset_frame", "apex_frame"))
        offset = None
    if onset is None or apex is None:
        return onset, apex, offset, "missing", source
    if n_frames is not None and not all(in_range(f, n_frames) for f in (onset, apex, offset) if f is not None):
        return None, None, None, "out_of_range", source
    if onset > apex or (offset is not None and offset < apex):
        return None, None, None, "onset_after_apex", source
    return onset, apex, offset, None, source


def _predictions(task: dict, take: str) -> list[dict]:
    out = []
    for pred in task.get("predictions") or []:
        if not isinstance(pred, dict):
            continue
        labels = _values(pred.get("result") or [], "expression", "choices")
        if len(labels) == 1:
            out.append(
                {
                    "take_id": take,
                    "model_version": str(pred.get("model_version") or ""),
                    "label": labels[0],
                    "score": pred.get("score"),
                }
            )
    return out


def parse_export(
    tasks: list[dict], config: LabelConfig, known_takes: set[str], n_frames: dict[str, int] | None = None
) -> Parsed:
    """Usable annotations as rows; every other annotation counted under its reason.

    n_frames (take_id -> frame count), when given, is used to reject out-of-range onset/apex marks.
    """
    rows, preds = [], []
    p = Parsed(ratings=pd.DataFrame())
    for task in tasks:
        p.tasks += 1
        data = task.get("data", {}) if isinstance(task, dict) else {}
        take = data.get("take_id")
        anns = task.get("annotations") or []
        p.excluded["drafts_ignored"] += len(task.get("drafts") or [])
        if take not in known_takes:
            for _ in anns or [None]:
                p.exclude("task_not_in_manifest", f"task {task.get('id')} take {take!r}")
            continue
        preds += _predictions(task, take)
        if not anns:
            p.tasks_without_annotation += 1
            continue
        for ann in anns:
            where = f"task {task.get('id')} ({take}) annotation {ann.get('id')}"
            if ann.get("was_cancelled"):
                p.exclude("cancelled_or_skipped", where)
                continue
            who = _annotator(ann)
            if who is None:
                p.exclude("annotator_unknown_or_deleted", where)
                continue
            result = ann.get("result") or []
            gold_meta = ann.get(GOLD_KEY)
            if (
                ann.get("ground_truth")
                and isinstance(gold_meta, dict)
                and gold_meta.get("sha256") != gold_digest(result)
            ):
                p.gold_changed.append(
                    {
                        "take_id": take,
                        "annotation_id": ann.get("id"),
                        "updated_by": ann.get("updated_by"),
                        "source": gold_meta.get("source"),
                    }
                )
                p.exclude("gold_answer_changed_after_pull", where)
                continue
            labels = _values(result, "expression", "choices")
            if not labels:
                p.exclude("no_expression_label", where)
                continue
            if len(labels) > 1 or labels[0] not in config.expressions:
                p.exclude("label_not_in_config", f"{where}: {labels}")
                continue
            flags = _values(result, "quality", "choices")
            bad_flags = [f for f in flags if f not in config.quality_flags]
            if bad_flags:
                p.exclude("quality_flag_not_in_config", f"{where}: {bad_flags}")
                continue
            bad_marks = sorted(set(timeline_marks(result)) - set(config.marks)) if config.marks else []
            if bad_marks:
                p.exclude("timeline_label_not_in_config", f"{where}: {bad_marks}")
                continue
            onset, apex, offset, problem, source = onset_apex(result, (n_frames or {}).get(take))
            if problem:
                p.mark_problems[problem] += 1
                p.mark_problem_rows.append({"take_id": take, "annotator": who, "problem": problem})
                p.examples.setdefault(f"marks_{problem}", [])
                if len(p.examples[f"marks_{problem}"]) < 5:
                    p.examples[f"marks_{problem}"].append(where)
            rows.append(
                {
                    "take_id": take,
                    "task_id": task.get("id"),
                    "annotation_id": ann.get("id"),
                    "annotator": who,
                    "label": labels[0],
                    "onset_frame": onset,
                    "apex_frame": apex,
                    "offset_frame": offset,
                    "mark_problem": problem,
                    "marks_source": source,
                    "quality_flags": ",".join(sorted(flags)),
                    "lead_time": ann.get("lead_time"),
                    "ground_truth": bool(ann.get("ground_truth")),
                    "created_at": ann.get("created_at"),
                }
            )
    p.ratings = pd.DataFrame(rows, columns=RATING_COLUMNS)
    p.predictions = pd.DataFrame(preds, columns=["take_id", "model_version", "label", "score"])
    return p


RATING_COLUMNS = [
    "take_id",
    "task_id",
    "annotation_id",
    "annotator",
    "label",
    "onset_frame",
    "apex_frame",
    "offset_frame",
    "mark_problem",
    "marks_source",
    "quality_flags",
    "lead_time",
    "ground_truth",
    "created_at",
]
