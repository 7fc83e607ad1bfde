"""`mvfer consent withdraw SUBJECT`: record the withdrawal in the ledger, then remove the subject
from everything the project owns, and say what it could not reach.

Order matters: the models trained on the subject are found from the splits before the splits are
cleaned, and the DVC cache objects of deleted files are found before the files go. The record
appended to `privacy/withdrawals.jsonl` holds counts and a date, never an id.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline import consent, vocab
from pipeline.errors import PipelineError
from pipeline.layout import CAPTURE_LOG_NAME, SUBJECTS_NAME, TAKES_SUBDIR, Layout
from pipeline.params import Params
from pipeline.privacy import artifacts, dvc_cache, releases, scrub
from pipeline.utils import io

log = logging.getLogger(__name__)


class WithdrawError(PipelineError, ValueError):
    """The withdrawal cannot start (subject unknown, ledger unreadable); names the file."""


def take_ids(subject: str, raw: Path, manifest: Path) -> set[str]:
    """The subject's take ids (and file stems) from the capture log and the manifest."""
    ids: set[str] = set()
    log_path = raw / CAPTURE_LOG_NAME
    if log_path.is_file():
        rows = pd.read_csv(log_path, dtype=str, keep_default_na=False)
        if {"take_id", "subject_id"} <= set(rows.columns):
            mine = rows[rows["subject_id"] == subject]
            ids |= set(mine["take_id"]) | ({Path(f).stem for f in mine["file"]} if "file" in mine else set())
    if manifest.is_file():
        m = pd.read_parquet(manifest)
        if "subject_id" in m:
            ids |= set(m.loc[m["subject_id"] == subject, "take_id"].dropna())
    return {i for i in ids if i}


def mark_withdrawn(ledger_path: Path, subject: str, date: str) -> bool:
    """Set `withdrawn` (and `withdrawn_date` when the table has it) for the subject; False if already."""
    text = ledger_path.read_text(encoding="utf-8-sig")
    rows = list(csv.DictReader(_io.StringIO(text)))
    fields = list(rows[0].keys()) if rows else []
    changed = False
    for r in rows:
        if r.get("subject_id", "").strip() == subject:
            if consent.parse_flag(r.get(vocab.WITHDRAWN)) is not True:
                r[vocab.WITHDRAWN], changed = "true", True
            if "withdrawn_date" in r and not r["withdrawn_date"]:
                r["withdrawn_date"], changed = date, True
    if changed:
        out = _io.StringIO()
        w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        io.write_text(ledger_path, out.getvalue())
    return changed


def _label_studio(home: Path):
    """A client when a server is configured (a running local server or $LABEL_STUDIO_URL, and a token)."""
    from pipeline.annotate import server
    from pipeline.annotate.sync import client

    token = os.environ.get(server.TOKEN_ENV)
    info = server.status(home / "server")
    url = os.environ.get("LABEL_STUDIO_URL") or (info.url if info else None)
    return client(url, token) if url and token else None


def _label_studio_tasks(ls, use_label_studio: bool, targets: set[str], home: Path) -> tuple[int | None, list[str]]:
    """Delete the subject's tasks on the configured server: (tasks deleted or None, what was not reached)."""
    notes: list[str] = []
    client = ls
    if client is None and use_label_studio:
        try:
            client = _label_studio(home)
        except Exception as e:  # noqa: BLE001 - an unreachable server is reported, never fatal
            return None, [f"Label Studio: configured but not reachable ({type(e).__name__})"]
    if client is None:
        notes.append(
            "Label Studio: no server configured (LABEL_STUDIO_URL or `mvfer labelstudio start`, and "
            "LABEL_STUDIO_API_KEY); tasks on a server were not checked"
        )
        if home.is_dir():
            notes.append(
                f"the local Label Studio database in {home.name}/ still holds the tasks: "
                "start it (`mvfer labelstudio start`) and run the withdrawal again"
            )
        return None, notes
    from pipeline.annotate.server import DB_NAME
    from pipeline.privacy.labelstudio import delete_everywhere

    try:
        return delete_everywhere(client, targets, home / "server" / DB_NAME), notes
    except Exception as e:  # noqa: BLE001 - as above
        return None, [f"Label Studio: task deletion failed ({type(e).__name__}); delete the tasks by hand"]


def withdraw(
    subject: str, layout: Layout, params: Params, ls=None, use_label_studio: bool = True, now: datetime | None = None
) -> dict:
    """Withdraw one subject everywhere; returns the record (counts only) that was appended to the log.

    `ls`: a Label Studio client to use (else one is made when a server is configured and
    `use_label_studio`); `now`: the time recorded (tests fix it).
    """
    now = now or datetime.now(UTC)
    date = now.date().isoformat()
    raw = layout.resolve(params.ingest.raw_dir)
    ledger_path = raw / SUBJECTS_NAME
    ledger = consent.read_ledger(ledger_path)
    if subject not in ledger.records and subject not in ledger.invalid:
        raise WithdrawError(f"{ledger_path}: subject {subject!r} is not in the consent table")
    ids = take_ids(subject, raw, layout.manifest)
    targets = ids | {subject}
    mark_withdrawn(ledger_path, subject, date)

    roots = artifacts.output_roots(layout, raw)
    retrain = artifacts.models_to_retrain(layout, ids)
    takes_dir = raw / TAKES_SUBDIR
    raw_files = (
        [takes_dir / f for f in sorted(os.listdir(takes_dir)) if scrub.mentions(f, targets)]
        if takes_dir.is_dir()
        else []
    )
    doomed = {dvc_cache.md5_file(p) for p in [*artifacts.doomed_files(roots, targets), *raw_files] if p.is_file()}
    outputs = artifacts.clean_outputs(layout, roots, targets)
    artifacts.mark_for_retraining(layout, retrain)
    epoch = int(datetime.fromisoformat(params.release.date).replace(tzinfo=UTC).timestamp())
    rel = releases.purge_releases(layout.release, layout.stage_tmp("release"), targets, date, epoch)
    cache = dvc_cache.purge(dvc_cache.cache_dir(layout.dvc_dir), targets, doomed)

    unreachable = [
        f"DVC remote '{r}': copies pushed there are not reached; after `dvc repro` and `dvc push`, run "
        f"`dvc gc --cloud -r {r}`"
        for r in dvc_cache.remotes(layout.dvc_dir)
    ]
    if rel["archives_unreadable"]:
        unreachable.append(
            f"{rel['archives_unreadable']} release archive(s) under release/ could not be read to purge "
            "them: delete them by hand"
        )
    unreachable.append(
        f"published releases ({params.release.url}) and copies users downloaded: ask for deletion, "
        "publish the amended release"
    )
    if raw_files:
        unreachable.append(
            f"the source recordings in {params.ingest.raw_dir} ({len(raw_files)} files) are input, not "
            "output: delete them at the source if the consent form requires it"
        )
    tasks, notes = _label_studio_tasks(ls, use_label_studio, targets, layout.label_studio_home)
    unreachable += notes
    record = {
        "recorded_at": now.isoformat(timespec="seconds"),
        "subjects": 1,
        "takes": len(ids),
        "outputs": outputs,
        **rel,
        "dvc_cache_objects_removed": cache,
        "models_marked_for_retraining": len(retrain),
        "label_studio_tasks_deleted": tasks,
        "unreachable": unreachable,
        "next": "run `dvc repro` to rebuild the outputs without the subject",
    }
    _append(layout.withdrawal_log, record)
    return record


def withdraw_command(layout: Layout, params: Params, subject: str, use_label_studio: bool = True) -> int:
    """`mvfer consent withdraw SUBJECT`: withdraw, log what was not reached, one summary line on stdout.

    Shaped like a stage shell, so the CLI runs it through `pipeline.stage.invoke` (one line and exit 1
    for an unknown subject, exit 2 for a fault of the machine).
    """
    rec = withdraw(subject, layout, params, use_label_studio=use_label_studio)
    for line in rec["unreachable"]:
        log.warning("not reached: %s", line)
    sys.stdout.write(
        f"withdrawn: {rec['takes']} takes removed from the outputs, {rec['releases_amended']} release(s) "
        f"amended, {rec['dvc_cache_objects_removed']} DVC cache object(s) removed, "
        f"{rec['models_marked_for_retraining']} model(s) marked for retraining; record appended to "
        f"{layout.withdrawal_log.name}; now run `dvc repro`\n"
    )
    return 0


def _append(log_path: Path, record: dict) -> None:
    """Append one JSON line atomically (the whole file rewritten through a temp file)."""
    old = log_path.read_text() if log_path.is_file() else ""
    io.write_text(log_path, old + json.dumps(record, sort_keys=True) + "\n")
