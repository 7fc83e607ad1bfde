"""Push tasks to Label Studio and pull its exports, through `label-studio-sdk`.

Push is idempotent: a take already in the project is never imported twice (tasks are matched by
`data.take_id`). Tasks point at the H.264 proxies of the `media` stage (data/media/<take_id>.mp4,
served by a local-files storage over that folder), so every browser can play them. The project
serves each task to `annotate.overlap` different annotators. Nothing is pre-ticked unless
`annotate.prefill` asks for it, and the prompted expression is not shown unless
`annotate.show_prompt`: annotators judge what they see. The model's guesses (`--guesses`) are
imported as predictions with their confidence and model version, and `order: uncertainty` imports
the least confident takes first (the project serves tasks in import order). A fraction of tasks
carries an expert's answer as a ground-truth annotation (gold), so QA can score annotators.

Pull writes a timestamped full-JSON export (atomically), checks it against the labeling config,
and updates the snapshot the QA stage depends on, so `dvc repro` stays reproducible offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipeline import paths, vocab
from pipeline.annotate.frames import player_frame
from pipeline.annotate.guesses import Guesses
from pipeline.errors import PipelineError
from pipeline.params import AnnotateParams
from pipeline.qa.export import MARKS, LabelConfig, load_export, parse_export
from pipeline.utils import io

log = logging.getLogger(__name__)
REANNOTATION_SUFFIX = " (re-annotation)"
PROMPTED_VERSION = "prompted"
PAGE_SIZE = 500
DESCRIPTION = "mvfer takes: watch the take, mark onset and apex on the timeline, pick the expression you see, tick quality problems"


class PushError(PipelineError, ValueError):
    """Push or pull cannot go on; the message says what is missing and how to provide it."""


@dataclass(frozen=True)
class PushOptions:
    """What annotators see and how tasks are served (params `annotate:`)."""

    prefill: str = "none"
    show_prompt: bool = False
    overlap: int = 3
    gold_fraction: float = 0.0
    order: str = "sequential"
    seed: int = 0

    @classmethod
    def from_params(cls, a: AnnotateParams) -> "PushOptions":
        return cls(a.prefill, a.show_prompt, a.overlap, a.gold_fraction, a.order, a.seed)


def client(url: str, token: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=token)


def project_settings(opts: PushOptions, model_version: str | None) -> dict:
    """Project fields: overlap for every task, no empty submits, pre-annotations only when asked."""
    shown = {"none": None, "prompted": PROMPTED_VERSION, "model": model_version}[opts.prefill]
    return {"maximum_annotations": opts.overlap, "overlap_cohort_percentage": 100, "show_overlap_first": True,
            "sampling": "Sequential sampling", "enable_empty_annotation": False, "show_skip_button": True,
            "show_collab_predictions": shown is not None, "model_version": shown or "",
            "description": DESCRIPTION}


def projects(ls) -> list:
    """Every project, page by page, never asking for the page after the last one (which Label Studio
    answers with an 'Invalid page' 404 and a logged traceback, as the SDK's own pager does)."""
    out: list = []
    page = 1
    while True:
        pager = ls.projects.list(page=page, page_size=PAGE_SIZE)
        items = list(pager.items or [])
        out += items
        count = getattr(getattr(pager, "response", None), "count", None)  # a full last page: stop at the reported count
        if len(items) < PAGE_SIZE or (count is not None and len(out) >= count):
            return out
        page += 1


def _project(ls, title: str, label_config: str, settings: dict):
    for p in projects(ls):
        if p.title == title:
            changed = (p.label_config or "").strip() != label_config.strip()
            ls.projects.update(id=p.id, **({"label_config": label_config} if changed else {}), **settings)
            return p
    return ls.projects.create(title=title, label_config=label_config, **settings)


def _ensure_storage(ls, project_id: int, media_dir: Path) -> None:
    """A local-files import storage over the proxies folder (a subfolder of the document root)."""
    for s in ls.import_storage.local.list(project=project_id):
        if Path(s.path) == media_dir:
            return
    ls.import_storage.local.create(project=project_id, path=str(media_dir), title="media", use_blob_urls=False)


def project_tasks(ls, project_id: int) -> list:
    """Every task of a project, page by page, stopping at the reported total (asking for the page
    after the last one is what logged Label Studio's 'Invalid page' 404 on every push)."""
    tasks: list = []
    page = 1
    while True:
        pager = ls.tasks.list(project=project_id, fields="all", page=page, page_size=PAGE_SIZE)
        items = list(pager.items or [])
        tasks += items
        total = getattr(pager.response, "total", None)
        if not items or len(items) < PAGE_SIZE or (total is not None and len(tasks) >= total):
            return tasks
        page += 1


def existing_take_ids(ls, project_id: int) -> set[str]:
    return {t.data.get("take_id") for t in project_tasks(ls, project_id) if t.data}


def is_gold(take_id: str, fraction: float, seed: int) -> bool:
    """A stable, seeded draw: the same takes are gold on every push."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{take_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def marks_result(label: str, onset: int | None, apex: int | None) -> list[dict]:
    """An annotation result in the labeling config's terms (frames given 0-based, stored 1-based)."""
    res = [{"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}}]
    for name, frame in (("onset", onset), ("apex", apex)):
        if frame is not None and frame >= 0:
            f = player_frame(frame)
            res.append({"from_name": MARKS, "to_name": "video", "type": "timelinelabels",
                        "value": {"ranges": [{"start": f, "end": f}], "timelinelabels": [name]}})
    return res


def _prediction(label: str, version: str, score: float) -> dict:
    return {"model_version": version, "score": float(score), "result": [
        {"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}}]}


def task_payload(row, media_prefix: str, opts: PushOptions, guess: tuple[str, float, str] | None = None,
                 gold: dict | None = None) -> dict:
    """One task: the proxy by local-files URL, what the annotator may see, predictions, gold answer."""
    note = f"(the subject was asked for: {row.prompted_expression})" if opts.show_prompt else ""
    data = {"video": f"/data/local-files/?d={media_prefix}/{row.take_id}.mp4", "take_id": row.take_id,
            "fps": float(row.fps), "n_frames": int(row.n_frames), "prompt_note": note}
    preds = []
    if opts.prefill == "prompted":
        preds.append(_prediction(row.prompted_expression, PROMPTED_VERSION, 1.0))
    if guess is not None:
        preds.append(_prediction(guess[0], guess[2], guess[1]))
    task: dict = {"data": data, "predictions": preds}
    if gold is not None:
        task["annotations"] = [{"result": marks_result(gold["expression"], gold.get("onset_frame"), gold.get("apex_frame")),
                                "ground_truth": True, "was_cancelled": False}]
    return task


def load_gold(path: Path | None) -> dict[str, dict]:
    """take_id -> {expression, onset_frame, apex_frame} (0-based) from an expert's (or the simulator's) CSV."""
    if path is None or not path.exists():
        return {}
    df = pd.read_csv(path, dtype={"take_id": str})
    if "take_id" not in df.columns or "expression" not in df.columns:
        raise PushError(f"{path}: gold answers need columns take_id and expression")
    out = {}
    for r in df.to_dict(orient="records"):
        out[r["take_id"]] = {"expression": r["expression"],
                             **{k: (int(r[k]) if k in r and pd.notna(r[k]) else None) for k in ("onset_frame", "apex_frame")}}
    return out


def order_takes(takes: pd.DataFrame, order: str, guesses: Guesses | None) -> pd.DataFrame:
    """Import order = serving order: by take id, or the model's least confident first (unguessed last)."""
    takes = takes.sort_values("take_id")
    if order == "sequential":
        return takes
    if guesses is None:
        raise PushError("annotate.order 'uncertainty' needs the model's guesses: push --guesses reports/predictions.csv")
    conf = takes["take_id"].map(guesses.table["confidence"]).fillna(2.0)
    return takes.assign(_conf=conf).sort_values(["_conf", "take_id"], kind="stable").drop(columns="_conf")


def push(ls, title: str, manifest: pd.DataFrame, media_dir: Path, document_root: Path, opts: PushOptions = PushOptions(),
         guesses: Guesses | None = None, gold: dict[str, dict] | None = None, only: set[str] | None = None) -> dict:
    """Create/update the project, register the proxies' storage, import the takes it lacks."""
    media_dir, document_root = media_dir.resolve(), document_root.resolve()
    if not media_dir.is_relative_to(document_root) or media_dir == document_root:
        raise PushError(f"{media_dir} must be a subfolder of the Label Studio document root {document_root}")
    if opts.prefill == "model" and guesses is None:
        raise PushError("annotate.prefill 'model' needs the model's guesses: push --guesses reports/predictions.csv")
    version = guesses.model_versions[-1] if guesses is not None and len(guesses.table) else None
    project = _project(ls, title, paths.LABEL_CONFIG.read_text(), project_settings(opts, version))
    _ensure_storage(ls, project.id, media_dir)
    have = existing_take_ids(ls, project.id)
    accepted = manifest[manifest["status"] == vocab.ACCEPTED]
    if only is not None:
        accepted = accepted[accepted["take_id"].isin(only)]
    new = order_takes(accepted[~accepted["take_id"].isin(have)], opts.order, guesses)
    has_proxy = new["take_id"].map(lambda t: (media_dir / f"{t}.mp4").is_file()).astype(bool)
    skipped = Counter({"no_media_proxy": int((~has_proxy).sum())})
    for t in new.loc[~has_proxy, "take_id"]:
        log.warning("push: %s has no proxy %s; run the media stage (`dvc repro media`)", t, media_dir / f"{t}.mp4")
    new = new[has_proxy]
    prefix = media_dir.relative_to(document_root).as_posix()
    gold = gold or {}
    payload = []
    for r in new.itertuples(index=False):
        g = gold.get(r.take_id) if is_gold(r.take_id, opts.gold_fraction, opts.seed) else None
        payload.append(task_payload(r, prefix, opts, guesses.get(r.take_id) if guesses is not None else None, g))
    if payload:
        ls.projects.import_tasks(id=project.id, request=payload, return_task_ids=True)
    summary = {"project_id": project.id, "imported": len(payload), "already_present": len(have),
               "gold": sum("annotations" in p for p in payload),
               "with_model_guess": sum(any(pr["model_version"] != PROMPTED_VERSION for pr in p["predictions"]) for p in payload),
               "skipped": dict(+skipped), "overlap": opts.overlap, "prefill": opts.prefill, "order": opts.order}
    log.info("push: project %r (id %d): %d new tasks (%d gold), %d already there, skipped %s", title, project.id,
             len(payload), summary["gold"], len(have), summary["skipped"] or "none")
    return summary


def push_reannotation(ls, title: str, queue: pd.DataFrame, manifest: pd.DataFrame, media_dir: Path, document_root: Path,
                      opts: PushOptions = PushOptions()) -> dict:
    """Queued items as tasks of the companion project (no gold: these need fresh annotators' answers)."""
    opts = PushOptions(opts.prefill, opts.show_prompt, opts.overlap, 0.0, "sequential", opts.seed)
    return push(ls, title + REANNOTATION_SUFFIX, manifest, media_dir, document_root, opts, only=set(queue["take_id"]))


def _export(ls, project_id: int) -> list[dict]:
    chunks = ls.projects.exports.download_sync(id=project_id, export_type="JSON", download_all_tasks=True)
    data = chunks if isinstance(chunks, (bytes, bytearray)) else b"".join(chunks)
    return json.loads(data)


def pull(ls, title: str, known_takes: set[str], exports_dir: Path = paths.ANNOTATION_EXPORTS,
         snapshot: Path = paths.ANNOTATION_SNAPSHOT, n_frames: dict[str, int] | None = None) -> dict:
    """Export the project (and its re-annotation companion), keep a timestamped copy, update the snapshot."""
    ids = {p.title: p.id for p in projects(ls)}
    if title not in ids:
        raise PushError(f"no Label Studio project titled {title!r}; known: {', '.join(sorted(ids)) or 'none'}")
    tasks = _export(ls, ids[title])
    if title + REANNOTATION_SUFFIX in ids:
        tasks += _export(ls, ids[title + REANNOTATION_SUFFIX])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    text = json.dumps(tasks, indent=1, sort_keys=True)
    exported = exports_dir / f"export-{stamp}.json"
    io.write_text(exported, text)
    parsed = parse_export(load_export(exported), LabelConfig.load(paths.LABEL_CONFIG), known_takes, n_frames)
    io.write_text(snapshot, text)
    r = parsed.ratings
    summary = {"export": str(exported), "snapshot": str(snapshot), "tasks": parsed.tasks,
               "annotations_usable": len(r), "annotators": int(r["annotator"].nunique()),
               "gold_annotations": int(r["ground_truth"].sum()), "tasks_without_annotation": parsed.tasks_without_annotation,
               "mark_problems": dict(parsed.mark_problems), "excluded": {k: v for k, v in parsed.excluded.items() if v}}
    log.info("pull: %s", summary)
    return summary


def summary_line(s: dict) -> str:
    """Pull's one-line result for the terminal."""
    excl = ", ".join(f"{k} {v}" for k, v in sorted(s["excluded"].items())) or "none"
    marks = ", ".join(f"{k} {v}" for k, v in sorted(s["mark_problems"].items())) or "none"
    return (f"pulled {s['tasks']} tasks: {s['annotations_usable']} usable annotations by {s['annotators']} annotators "
            f"({s['gold_annotations']} gold), {s['tasks_without_annotation']} tasks not yet annotated; excluded: {excl}; "
            f"onset/apex problems: {marks} -> {s['snapshot']}")
