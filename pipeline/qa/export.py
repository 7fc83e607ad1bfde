"""Label Studio full-JSON exports: load, recognise the wrong format, validate against our config.

The server accepts any result, so every annotation is checked here against the labeling config;
what cannot be used is excluded and counted by reason, never silently dropped.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError

UNSURE = "unsure"


class ExportError(PipelineError, ValueError):
    """An export that cannot be used at all; the message names the file and what is wrong."""


@dataclass(frozen=True)
class LabelConfig:
    """What the labeling config allows: the expression choices and the quality flags."""

    expressions: tuple[str, ...]
    quality_flags: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> "LabelConfig":
        root = ET.parse(path).getroot()
        choices = {c.get("name"): tuple(ch.get("value") for ch in c.iter("Choice")) for c in root.iter("Choices")}
        for name in ("expression", "quality"):
            if name not in choices:
                raise ExportError(f"{path}: the labeling config has no <Choices name=\"{name}\">")
        return cls(expressions=choices["expression"], quality_flags=choices["quality"])


@dataclass
class Parsed:
    ratings: pd.DataFrame                      # one row per usable annotation
    excluded: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    tasks: int = 0
    tasks_without_annotation: int = 0

    def exclude(self, reason: str, where: str) -> None:
        self.excluded[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)


def load_export(path: Path) -> list[dict]:
    """The task list of a full JSON export; JSON_MIN, truncated and empty files are clear errors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportError(f"{path}: file not found") from None
    if not text.strip():
        raise ExportError(f"{path}: the export is empty (0 tasks)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}); truncated download?") from None
    if not isinstance(data, list):
        raise ExportError(f"{path}: expected a list of tasks (Label Studio 'JSON' export), got a JSON {type(data).__name__}")
    if not data:
        raise ExportError(f"{path}: the export is empty (0 tasks)")
    first = data[0]
    if isinstance(first, dict) and "annotations" not in first and "data" not in first:
        raise ExportError(f"{path}: this looks like a JSON_MIN export (no 'annotations'/'data' keys); "
                          "export with export_type='JSON' (full), which keeps annotators, cancellations and types")
    return data


def _annotator(ann: dict) -> str | None:
    who = ann.get("completed_by")
    if isinstance(who, dict):
        who = who.get("id") or who.get("email")
    return None if who in (None, "") else str(who)


def _values(result: list[dict], name: str, kind: str) -> list:
    out = []
    for r in result:
        if r.get("from_name") == name:
            v = r.get("value", {})
            out.extend(v.get("choices", []) if kind == "choices" else [v.get("number")])
    return out


def parse_export(tasks: list[dict], config: LabelConfig, known_takes: set[str]) -> Parsed:
    """Usable annotations as rows; every other annotation counted under its reason."""
    rows = []
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
            onset, apex = (next(iter(_values(result, n, "number")), None) for n in ("onset_frame", "apex_frame"))
            rows.append({"take_id": take, "task_id": task.get("id"), "annotation_id": ann.get("id"), "annotator": who,
                         "label": labels[0], "onset_frame": onset, "apex_frame": apex, "quality_flags": ",".join(sorted(flags)),
                         "lead_time": ann.get("lead_time"), "ground_truth": bool(ann.get("ground_truth")),
                         "created_at": ann.get("created_at")})
    p.ratings = pd.DataFrame(rows, columns=["take_id", "task_id", "annotation_id", "annotator", "label", "onset_frame", "apex_frame",
                                            "quality_flags", "lead_time", "ground_truth", "created_at"])
    return p
