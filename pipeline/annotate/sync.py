"""Push tasks to Label Studio and pull its exports, through `label-studio-sdk`.

Every annotator labels in a workspace of their own (a Label Studio organisation holding only their
project): push gives each take to `annotate.overlap` different annotators' projects, and is
idempotent (a take already in a project is never imported twice; tasks are matched by
`data.take_id`). Tasks point at the H.264 proxies of the `media` stage (data/media/<take_id>.mp4,
served by a local-files storage over that folder), so every browser can play them. Nothing is
pre-ticked unless `annotate.prefill` asks for it, and the prompted expression is not shown unless
`annotate.show_prompt`: annotators judge what they see. The model's guesses (`--guesses`) are
imported as predictions with their confidence and model version, and `order: uncertainty` serves
the least confident takes first. Gold (an expert's answers) is never stored in Label Studio: pull
adds it to the snapshot with a fingerprint, so QA scores annotators and sees a changed gold answer.

Pull collects every workspace and writes a timestamped full-JSON export (atomically), checks it against the
labeling config, and updates the snapshot the QA stage depends on, so `dvc repro` stays reproducible offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline import vocab
from pipeline.annotate.export import GOLD_KEY, MARKS, LabelConfig, gold_digest, load_export, parse_export
from pipeline.annotate.frames import player_frame
from pipeline.annotate.guesses import Guesses
from pipeline.errors import PipelineError
from pipeline.params import AnnotateParams
from pipeline.utils import io

log = logging.getLogger(__name__)
REANNOTATION_SUFFIX = " (re-annotation)"
PROMPTED_VERSION = "prompted"
PAGE_SIZE = 500
DESCRIPTION = (
    "mvfer takes: watch the take, mark onset and apex (keys O and A on the frame shown), "
    "pick the expression you see, tick quality problems"
)


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
    def from_params(cls, a: AnnotateParams) -> PushOptions:
        return cls(a.prefill, a.show_prompt, a.overlap, a.gold_fraction, a.order, a.seed)


def client(url: str, token: str):
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=token)


def project_settings(opts: PushOptions, model_version: str | None) -> dict:
    """Project fields: overlap for every task, no empty submits, pre-annotations only when asked."""
    shown = {"none": None, "prompted": PROMPTED_VERSION, "model": model_version}[opts.prefill]
    return {
        "maximum_annotations": opts.overlap,
        "overlap_cohort_percentage": 100,
        "show_overlap_first": True,
        "sampling": "Sequential sampling",
        "enable_empty_annotation": False,
        "show_skip_button": True,
        "show_collab_predictions": shown is not None,
        "model_version": shown or "",
        "description": DESCRIPTION,
    }


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
            res.append(
                {
                    "from_name": MARKS,
                    "to_name": "video",
                    "type": "timelinelabels",
                    "value": {"ranges": [{"start": f, "end": f}], "timelinelabels": [name]},
                }
            )
    return res


def _prediction(label: str, version: str, score: float) -> dict:
    return {
        "model_version": version,
        "score": float(score),
        "result": [{"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}}],
    }


def task_payload(row, media_prefix: str, opts: PushOptions, guess: tuple[str, float, str] | None = None) -> dict:
    """One task: the proxy by local-files URL, what the annotator may see, predictions; never a gold answer."""
    note = f"(the subject was asked for: {row.prompted_expression})" if opts.show_prompt else ""
    data = {
        "video": f"/data/local-files/?d={media_prefix}/{row.take_id}.mp4",
        "take_id": row.take_id,
        "fps": float(row.fps),
        "n_frames": int(row.n_frames),
        "prompt_note": note,
    }
    preds = []
    if opts.prefill == "prompted":
        preds.append(_prediction(row.prompted_expression, PROMPTED_VERSION, 1.0))
    if guess is not None:
        preds.append(_prediction(guess[0], guess[2], guess[1]))
    return {"data": data, "predictions": preds}


def load_gold(path: Path | None) -> dict[str, dict]:
    """take_id -> {expression, onset_frame, apex_frame} (0-based) from an expert's (or the simulator's) CSV."""
    if path is None or not path.exists():
        return {}
    df = pd.read_csv(path, dtype={"take_id": str})
    if "take_id" not in df.columns or "expression" not in df.columns:
        raise PushError(f"{path}: gold answers need columns take_id and expression")
    out = {}
    for r in df.to_dict(orient="records"):
        out[r["take_id"]] = {
            "expression": r["expression"],
            **{k: (int(r[k]) if k in r and pd.notna(r[k]) else None) for k in ("onset_frame", "apex_frame")},
        }
    return out


def order_takes(takes: pd.DataFrame, order: str, guesses: Guesses | None) -> pd.DataFrame:
    """Import order = serving order: by take id, or the model's least confident first (unguessed last)."""
    takes = takes.sort_values("take_id")
    if order == "sequential":
        return takes
    if guesses is None:
        raise PushError(
            "annotate.order 'uncertainty' needs the model's guesses: push --guesses reports/predictions.csv"
        )
    conf = takes["take_id"].map(guesses.table["confidence"]).fillna(2.0)
    return takes.assign(_conf=conf).sort_values(["_conf", "take_id"], kind="stable").drop(columns="_conf")


def _rank(seed: int, take_id: str, who: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{take_id}:{who}".encode()).digest()[:8], "big")


def assign(
    take_ids: list[str], annotators: list[str], overlap: int, seed: int, exclude: dict[str, set[str]] | None = None
) -> dict[str, list[str]]:
    """annotator -> takes: each take to the `overlap` annotators ranking highest for it (rendezvous hashing),
    so adding an annotator later moves no take away from anyone who has it. `exclude` (take -> accounts)
    keeps a take from annotators who already answered it: a re-annotation round, and the adjudication of
    a 1-1 tie, need fresh eyes."""
    out: dict[str, list[str]] = {a: [] for a in annotators}
    for t in take_ids:
        fresh = [a for a in annotators if a not in (exclude or {}).get(t, set())]
        for a in sorted(fresh, key=lambda a: _rank(seed, t, a), reverse=True)[:overlap]:
            out[a].append(t)
    return out


def answered_by(tasks: list[dict]) -> dict[str, set[str]]:
    """take -> accounts that submitted an answer to it, from a snapshot (what `assign` excludes for a new round)."""
    out: dict[str, set[str]] = {}
    for task in tasks:
        take = (task.get("data") or {}).get("take_id")
        for ann in task.get("annotations") or []:
            who = ann.get("completed_by_account")
            if take and who and not ann.get("was_cancelled") and not ann.get("ground_truth"):
                out.setdefault(str(take), set()).add(str(who))
    return out


def serving_order(takes: pd.DataFrame, who: str, opts: PushOptions, guesses: Guesses | None) -> pd.DataFrame:
    """Each annotator's own seeded order (nothing in it tells gold from other takes), or least confident first."""
    if opts.order == "uncertainty":
        return order_takes(takes, opts.order, guesses)
    key = takes["take_id"].map(lambda t: _rank(opts.seed, t, "order:" + who))
    return takes.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k")


def guide_html(path: Path | None) -> str:
    """The project's labeling instructions: the annotator guide's section between the `instructions` markers."""
    import html
    import re

    def inline(t: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`(.+?)`", r"<code>\1</code>", html.escape(t)))

    if path is None or not path.is_file():
        return DESCRIPTION
    text = path.read_text(encoding="utf-8")
    m = re.search(r"<!-- instructions:start -->(.*?)<!-- instructions:end -->", text, re.S)
    body = (m.group(1) if m else text).strip()
    out = []
    for block in re.split(r"\n\s*\n", body):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if not lines:
            continue
        if lines[0].startswith("#"):
            out.append(f"<h4>{inline(lines[0].lstrip('#').strip())}</h4>")
            lines = lines[1:]
        if lines and all(re.match(r"^(\d+\.|-|\|)", ln) or not ln for ln in lines[:1]):
            items, cur = [], ""
            for ln in lines:
                if re.match(r"^(\d+\.|-)\s", ln):
                    if cur:
                        items.append(cur)
                    cur = re.sub(r"^(\d+\.|-)\s+", "", ln)
                elif ln.startswith("|"):
                    cells = [c.strip() for c in ln.strip("|").split("|")]
                    if not all(set(c) <= set("-: ") for c in cells):
                        items.append(" \u2014 ".join(cells))
                else:
                    cur += " " + ln
            if cur:
                items.append(cur)
            out.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
        elif lines:
            out.append(f"<p>{inline(' '.join(lines))}</p>")
    return "".join(out)


def push(
    ls,
    db: Path,
    title: str,
    manifest: pd.DataFrame,
    media_dir: Path,
    document_root: Path,
    label_config: str,
    opts: PushOptions = PushOptions(),
    guesses: Guesses | None = None,
    only: set[str] | None = None,
    guide: Path | None = None,
    exclude: dict[str, set[str]] | None = None,
) -> dict:
    """Give every annotator account their project (in their own organization) and import the takes it lacks.

    Each take goes to `opts.overlap` annotators; each annotator's project holds only their tasks, served
    in their own order, with no stored answer: gold answers stay with mvfer and are added at pull.
    """
    from pipeline.annotate.accounts import acting_in, annotator_orgs

    media_dir, document_root = media_dir.resolve(), document_root.resolve()
    if not media_dir.is_relative_to(document_root) or media_dir == document_root:
        raise PushError(f"{media_dir} must be a subfolder of the Label Studio document root {document_root}")
    if opts.prefill == "model" and guesses is None:
        raise PushError("annotate.prefill 'model' needs the model's guesses: push --guesses reports/predictions.csv")
    annotators = annotator_orgs(db)
    if not annotators:
        raise PushError("no annotator accounts yet: add each with `mvfer labelstudio add-annotator EMAIL`, then push")
    version = guesses.model_versions[-1] if guesses is not None and len(guesses.table) else None
    settings = project_settings(opts, version)
    settings.update({"maximum_annotations": 1, "expert_instruction": guide_html(guide), "show_instruction": True})
    accepted = manifest[manifest["status"] == vocab.ACCEPTED]
    if only is not None:
        accepted = accepted[accepted["take_id"].isin(only)]
    has_proxy = accepted["take_id"].map(lambda t: (media_dir / f"{t}.mp4").is_file()).astype(bool)
    skipped = Counter({"no_media_proxy": int((~has_proxy).sum())})
    for t in accepted.loc[~has_proxy, "take_id"]:
        log.warning("push: %s has no proxy %s; run the media stage (`dvc repro media`)", t, media_dir / f"{t}.mp4")
    accepted = accepted[has_proxy]
    plan = assign(
        sorted(accepted["take_id"]),
        [e for _, e, _ in annotators],
        min(opts.overlap, len(annotators)),
        opts.seed,
        exclude,
    )
    prefix = media_dir.relative_to(document_root).as_posix()
    per: dict[str, dict] = {}
    for org, email, _ in annotators:
        with acting_in(db, org):
            project = _project(ls, title, label_config, settings)
            _ensure_storage(ls, project.id, media_dir)
            have = existing_take_ids(ls, project.id)
            mine = accepted[accepted["take_id"].isin(plan[email]) & ~accepted["take_id"].isin(have)]
            payload = [
                task_payload(r, prefix, opts, guesses.get(str(r.take_id)) if guesses is not None else None)
                for r in serving_order(mine, email, opts, guesses).itertuples(index=False)
            ]
            if payload:
                ls.projects.import_tasks(id=project.id, request=payload, return_task_ids=True)
        per[email] = {"project_id": project.id, "imported": len(payload), "already_present": len(have)}
    summary = {
        "annotators": per,
        "imported": sum(v["imported"] for v in per.values()),
        "already_present": sum(v["already_present"] for v in per.values()),
        "takes": len(accepted),
        "with_model_guess": len(accepted) if guesses is not None else 0,
        "skipped": dict(+skipped),
        "overlap": opts.overlap,
        "prefill": opts.prefill,
        "order": opts.order,
    }
    log.info(
        "push: project %r for %d annotators: %d new tasks, %d already there, skipped %s",
        title,
        len(per),
        summary["imported"],
        summary["already_present"],
        summary["skipped"] or "none",
    )
    return summary


def push_reannotation(
    ls,
    db: Path,
    title: str,
    queue: pd.DataFrame,
    manifest: pd.DataFrame,
    media_dir: Path,
    document_root: Path,
    label_config: str,
    opts: PushOptions = PushOptions(),
    guide: Path | None = None,
    answered: dict[str, set[str]] | None = None,
) -> dict:
    """Queued items as tasks of companion projects, each to annotators who have not answered it yet (`answered`:
    take -> accounts, from the snapshot): fresh answers, and a third annotator to settle a 1-1 tie."""
    opts = PushOptions(opts.prefill, opts.show_prompt, opts.overlap, 0.0, "sequential", opts.seed)
    return push(
        ls,
        db,
        title + REANNOTATION_SUFFIX,
        manifest,
        media_dir,
        document_root,
        label_config,
        opts,
        only=set(queue["take_id"]),
        guide=guide,
        exclude=answered,
    )


EXPORT_KEYS = ("id", "data", "annotations", "drafts", "predictions", "project", "created_at", "updated_at")


def _export(ls, project_id: int) -> list[dict]:
    """A project's tasks as Label Studio's full JSON export lays them out (id, data, annotations with
    completed_by, result, was_cancelled, ground_truth, lead_time, times; drafts; predictions).

    Why not Label Studio's export endpoint: it signs its converter with the token of the organization's
    creator, and an annotator's own organization is created by the annotator, who has no token (every
    token but $LABEL_STUDIO_API_KEY is deleted), so it answers 500. The task list with fields=all holds
    the same records."""
    out = []
    for t in project_tasks(ls, project_id):
        d = t.model_dump(mode="json") if hasattr(t, "model_dump") else dict(t)
        out.append({k: d.get(k) for k in EXPORT_KEYS})
    return out


class PullError(PipelineError, RuntimeError):
    """The pull did not happen (the server stopped answering); nothing was written."""


def gold_annotation(take: str, answer: dict, source: str) -> dict:
    """The expert's answer as a ground-truth annotation of the snapshot, with its fingerprint (QA checks it)."""
    result = marks_result(answer["expression"], answer.get("onset_frame"), answer.get("apex_frame"))
    return {
        "id": f"gold-{take}",
        "completed_by": "expert",
        "completed_by_account": "expert",
        "result": result,
        "was_cancelled": False,
        "ground_truth": True,
        "lead_time": None,
        "created_at": None,
        GOLD_KEY: {"source": source, "sha256": gold_digest(result)},
    }


def _exports(ls, db: Path, title: str) -> tuple[list[dict], Counter]:
    """Every annotator's project (and its re-annotation companion) plus a project in the admin's own
    organization (made by an older push), with each annotation's account; ground-truth flags set inside
    Label Studio are dropped (gold is mvfer's) and counted."""
    from pipeline.annotate.accounts import acting_in, annotator_orgs, workspaces

    tasks: list[dict] = []
    seen: Counter = Counter()
    emails = {uid: email for _, email, uid in annotator_orgs(db)}
    for org in workspaces(db):
        with acting_in(db, org):
            ids = {p.title: p.id for p in projects(ls)}
            for name in (title, title + REANNOTATION_SUFFIX):
                if name in ids:
                    seen["projects"] += 1
                    for task in _export(ls, ids[name]):
                        for ann in task.get("annotations") or []:
                            who = ann.get("completed_by")
                            who = who.get("id") if isinstance(who, dict) else who
                            if who in emails:
                                ann["completed_by_account"] = emails[who]
                            if ann.get("ground_truth"):
                                ann["ground_truth"] = False
                                ann["ground_truth_set_in_label_studio"] = True
                                seen["ground_truth_flags_ignored"] += 1
                        tasks.append(task)
    return tasks, seen


def pull(
    ls,
    db: Path,
    title: str,
    known_takes: set[str],
    config: LabelConfig,
    exports_dir: Path,
    snapshot: Path,
    n_frames: dict[str, int] | None = None,
    gold: dict[str, dict] | None = None,
    gold_fraction: float = 0.0,
    seed: int = 0,
    gold_source: str = "",
    url: str = "",
) -> dict:
    """Export every annotator's project, add mvfer's gold answers, keep a timestamped copy, update the snapshot.

    Everything is fetched before anything is written: a server that dies during the pull leaves the
    snapshot and the exports as they were, and the error says so in one line.
    """
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        tasks, seen = _exports(ls, db, title)
    except (httpx.HTTPError, OSError, ApiError) as e:
        reason = (str(e).strip().splitlines() or [""])[0] or type(e).__name__
        raise PullError(
            f"pull did not happen: Label Studio{' at ' + url if url else ''} stopped answering "
            f"({type(e).__name__}: {reason}); {snapshot} is unchanged; check `mvfer labelstudio status`, "
            "start it again with `mvfer labelstudio start` and pull again"
        ) from None
    if not seen["projects"]:
        raise PushError(f"no Label Studio project titled {title!r} in any annotator's workspace; push first")
    gold_added, done = 0, set()
    for task in tasks:  # one expert answer per gold take (a take sits in several annotators' projects)
        take = (task.get("data") or {}).get("take_id")
        if gold and take in gold and take not in done and is_gold(take, gold_fraction, seed):
            task.setdefault("annotations", []).append(gold_annotation(take, gold[take], gold_source))
            done.add(take)
            gold_added += 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    text = json.dumps(tasks, indent=1, sort_keys=True)
    exported = exports_dir / f"export-{stamp}.json"
    io.write_text(exported, text)
    parsed = parse_export(load_export(exported), config, known_takes, n_frames)
    io.write_text(snapshot, text)
    r = parsed.ratings
    summary = {
        "export": str(exported),
        "snapshot": str(snapshot),
        "tasks": parsed.tasks,
        "projects": seen["projects"],
        "annotations_usable": len(r),
        "annotators": int(r.loc[~r["ground_truth"].astype(bool), "annotator"].nunique()),
        "gold_annotations": int(r["ground_truth"].sum()),
        "gold_added": gold_added,
        "ground_truth_flags_ignored": seen["ground_truth_flags_ignored"],
        "tasks_without_annotation": parsed.tasks_without_annotation,
        "mark_problems": dict(parsed.mark_problems),
        "excluded": {k: v for k, v in parsed.excluded.items() if v},
    }
    log.info("pull: %s", summary)
    return summary


def summary_line(s: dict) -> str:
    """Pull's one-line result for the terminal."""
    excl = ", ".join(f"{k} {v}" for k, v in sorted(s["excluded"].items())) or "none"
    marks = ", ".join(f"{k} {v}" for k, v in sorted(s["mark_problems"].items())) or "none"
    flags = (
        f"; {s['ground_truth_flags_ignored']} ground-truth flags set in Label Studio ignored"
        if s.get("ground_truth_flags_ignored")
        else ""
    )
    return (
        f"pulled {s['tasks']} tasks: {s['annotations_usable']} usable annotations by {s['annotators']} annotators "
        f"({s['gold_annotations']} gold, from mvfer's gold file), {s['tasks_without_annotation']} tasks not yet "
        f"annotated (from {s.get('projects', 0)} annotator projects); excluded: {excl}; onset/apex problems: "
        f"{marks}{flags} -> {s['snapshot']}"
    )
