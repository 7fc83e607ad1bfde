"""Push tasks to Label Studio and pull its exports, through `label-studio-sdk`.

Push is idempotent: a take already in the project is never imported twice (tasks are matched by
`data.take_id`), new takes are added, and each task carries pre-annotations (the prompted
expression, and the model's guess when given) so annotators confirm rather than type. Items QA
queued for re-annotation go to a companion project, so they get fresh annotations. Pull writes a
timestamped full-JSON export (atomically), checks it against the labeling config, and updates the
snapshot the QA stage depends on, so `dvc repro` stays reproducible offline.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.qa.export import LabelConfig, load_export, parse_export
from pipeline.utils import io

log = logging.getLogger(__name__)
REANNOTATION_SUFFIX = " (re-annotation)"


def client(url: str, token: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=token)


def _project(ls, title: str, label_config: str):
    for p in ls.projects.list():
        if p.title == title:
            if (p.label_config or "").strip() != label_config.strip():
                ls.projects.update(id=p.id, label_config=label_config)
            return p
    return ls.projects.create(title=title, label_config=label_config, show_skip_button=True,
                              description="mvfer takes: confirm the expression, mark onset and apex, tick quality problems")


def _ensure_storage(ls, project_id: int, takes_dir: Path) -> None:
    """A local-files import storage over the takes folder (a subfolder of the document root)."""
    for s in ls.import_storage.local.list(project=project_id):
        if Path(s.path) == takes_dir:
            return
    ls.import_storage.local.create(project=project_id, path=str(takes_dir), title="takes", use_blob_urls=False)


def existing_take_ids(ls, project_id: int) -> set[str]:
    return {t.data.get("take_id") for t in ls.tasks.list(project=project_id, fields="all") if t.data}


def task_payload(row, media_prefix: str, guess: str | None = None) -> dict:
    """One task: the video by local-files URL, metadata, and pre-annotations to confirm."""
    def pred(label: str, version: str) -> dict:
        return {"model_version": version, "score": 1.0, "result": [
            {"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}}]}

    preds = [pred(row.prompted_expression, "prompted")]
    if guess:
        preds.append(pred(guess, "model"))
    return {"data": {"video": f"/data/local-files/?d={media_prefix}/{row.path}", "take_id": row.take_id,
                     "prompted_expression": row.prompted_expression, "fps": float(row.fps)}, "predictions": preds}


def push(ls, title: str, manifest: pd.DataFrame, raw_dir: Path, document_root: Path,
         guesses: dict[str, str] | None = None, only: set[str] | None = None) -> dict:
    """Create/update the project, register media storage, import the takes it lacks."""
    if not raw_dir.resolve().is_relative_to(document_root.resolve()) or raw_dir.resolve() == document_root.resolve():
        raise ValueError(f"{raw_dir} must be a subfolder of the Label Studio document root {document_root}")
    config = paths.LABEL_CONFIG.read_text()
    project = _project(ls, title, config)
    _ensure_storage(ls, project.id, (raw_dir / paths.TAKES_SUBDIR).resolve())
    have = existing_take_ids(ls, project.id)
    accepted = manifest[manifest["status"] == "accepted"].sort_values("take_id")
    if only is not None:
        accepted = accepted[accepted["take_id"].isin(only)]
    new = accepted[~accepted["take_id"].isin(have)]
    prefix = raw_dir.resolve().relative_to(document_root.resolve()).as_posix()
    payload = [task_payload(r, prefix, (guesses or {}).get(r.take_id)) for r in new.itertuples(index=False)]
    if payload:
        ls.projects.import_tasks(id=project.id, request=payload, return_task_ids=True)
    log.info("push: project %r (id %d): %d new tasks, %d already there", title, project.id, len(payload), len(have))
    return {"project_id": project.id, "imported": len(payload), "already_present": len(have)}


def push_reannotation(ls, title: str, queue: pd.DataFrame, manifest: pd.DataFrame, raw_dir: Path, document_root: Path) -> dict:
    """Queued items as tasks of the companion project, so each gets fresh annotations."""
    return push(ls, title + REANNOTATION_SUFFIX, manifest, raw_dir, document_root, only=set(queue["take_id"]))


def _export(ls, project_id: int) -> list[dict]:
    chunks = ls.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=True)
    data = chunks if isinstance(chunks, (bytes, bytearray)) else b"".join(chunks)
    return json.loads(data)


def pull(ls, title: str, known_takes: set[str], exports_dir: Path = paths.ANNOTATION_EXPORTS,
         snapshot: Path = paths.ANNOTATION_SNAPSHOT) -> dict:
    """Export the project (and its re-annotation companion), keep a timestamped copy, update the snapshot."""
    projects = {p.title: p.id for p in ls.projects.list()}
    if title not in projects:
        raise ValueError(f"no Label Studio project titled {title!r}; known: {', '.join(sorted(projects)) or 'none'}")
    tasks = _export(ls, projects[title])
    if title + REANNOTATION_SUFFIX in projects:
        tasks += _export(ls, projects[title + REANNOTATION_SUFFIX])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(tasks, indent=1, sort_keys=True)
    exported = exports_dir / f"export-{stamp}.json"
    io.write_text(exported, text)
    parsed = parse_export(load_export(exported), LabelConfig.load(paths.LABEL_CONFIG), known_takes)
    io.write_text(snapshot, text)
    summary = {"export": str(exported), "tasks": parsed.tasks, "annotations_usable": len(parsed.ratings),
               "tasks_without_annotation": parsed.tasks_without_annotation, "excluded": dict(parsed.excluded)}
    log.info("pull: %d tasks, %d usable annotations, excluded %s -> %s", parsed.tasks, len(parsed.ratings), dict(parsed.excluded), snapshot)
    return summary
