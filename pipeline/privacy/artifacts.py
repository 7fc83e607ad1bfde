"""Find and clean every pipeline output that holds a withdrawn subject (releases and the DVC cache
have their own modules).

What counts as an output comes from the stage registry (`pipeline.stages`), resolved through the
`Layout`, so a new stage's outputs are cleaned without a second list here.

A file named after a take is deleted; tables drop the rows that mention an id (the manifest and the
ingest report are redacted instead, so their counts still add up); JSON drops the entries; text
drops the lines; an array archive whose text arrays hold an id, or another text file that mentions
one, is deleted, to be rebuilt by `dvc repro` (ids match at id boundaries: `S1` never hits `S10`;
binary files are never byte-searched). Returns counts per output folder, never names.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import consent, stages, vocab
from pipeline.errors import environment_fault, is_environment_fault
from pipeline.layout import Layout
from pipeline.privacy import scrub
from pipeline.utils import io

log = logging.getLogger(__name__)
_TEXT = {".md", ".txt", ".jsonl", ".log", ".xml", ".html", ".yaml", ".yml", ".tsv"}
RETRAIN_NAME = "RETRAIN.json"


def output_roots(layout: Layout, raw: Path) -> list[Path]:
    """The folders to clean: every stage output the registry declares (outermost folders), except
    `release/` (privacy/releases.py) and the raw capture folder (the pipeline's input, and the consent
    ledger: reported, never cleaned); plus `annotations/`, whose Label Studio exports are written by
    people, not a stage, and hold take ids."""
    skip = {layout.release, layout.raw, raw}
    roots = [layout.resolve(rel) for rel in stages.output_roots()]
    roots = [p for p in roots if p not in skip and not raw.is_relative_to(p)]
    return roots + ([layout.annotations] if layout.annotations not in roots else [])


def _category(p: Path, roots: list[Path], layout: Layout) -> str:
    for root in sorted(roots, key=lambda r: len(r.parts), reverse=True):
        if p.is_relative_to(root):
            return root.relative_to(layout.root).as_posix()
    return p.parent.name


def doomed_files(roots: list[Path], ids: set[str]) -> list[Path]:
    """Files that will be deleted because their path names an id (their DVC cache objects go too)."""
    out = []
    for root in roots:
        if root.is_dir():
            out += [
                p
                for p in root.rglob("*")
                if p.is_file() and not p.is_symlink() and scrub.mentions(p.relative_to(root).as_posix(), ids)
            ]
    return sorted(out)


def _clean_file(p: Path, ids: set[str], layout: Layout) -> str | None:
    """What was done to one file: 'deleted', 'rewritten', or None."""
    if p == layout.manifest:
        df, gone = consent.redact_manifest(pd.read_parquet(p), ids)
        if gone:
            io.write_parquet(p, df)
        return "rewritten" if gone else None
    if p == layout.ingest_report:
        report = json.loads(p.read_text())
        gone = {
            str(it.get("take_id"))
            for it in report.get("quarantined_items", [])
            if scrub.mentions(str(it.get("take_id")), ids)
        }
        new = consent.redact_report(report, gone)
        new, n = scrub.json_value(new, ids)
        if new != report:
            io.write_json(p, new)
        return "rewritten" if new != report else None
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        df, n = scrub.frame(pd.read_parquet(p), ids)
        if n:
            io.write_parquet(p, df)
        return "rewritten" if n else None
    if suffix == ".csv":
        try:
            df, n = scrub.frame(pd.read_csv(p, dtype=str, keep_default_na=False), ids)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            return _clean_text(p, ids)
        if n:
            io.write_csv(p, df)
        return "rewritten" if n else None
    if suffix == ".json":
        try:
            obj = json.loads(p.read_text())
        except (ValueError, UnicodeDecodeError):
            return _clean_bytes(p, ids)
        new, n = scrub.json_value(obj, ids)
        if n:
            io.write_json(p, new)
        return "rewritten" if n else None
    if suffix in _TEXT:
        return _clean_text(p, ids)
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                hit = scrub.arrays_mention({k: z[k] for k in z.files}, ids)
        except Exception:  # noqa: BLE001 - an unreadable archive is searched as bytes instead
            return _clean_bytes(p, ids)
        if hit:
            p.unlink()
            return "deleted"
        return None
    return _clean_bytes(p, ids)


def _clean_text(p: Path, ids: set[str]) -> str | None:
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        return _clean_bytes(p, ids)
    new, n = scrub.lines(text, ids)
    if n:
        io.write_text(p, new)
    return "rewritten" if n else None


def _clean_bytes(p: Path, ids: set[str]) -> str | None:
    """A file of no known format: deleted if it is text that mentions an id. Binary content (video,
    image, checkpoint) is never byte-searched, where a short id matches at random: it goes when its
    path names an id; a checkpoint trained on the subject is marked for retraining instead."""
    text = scrub.text_of(p.read_bytes())
    if text is not None and scrub.mentions(text, ids):
        p.unlink()
        return "deleted"
    return None


def clean_outputs(layout: Layout, roots: list[Path], ids: set[str]) -> dict[str, dict[str, int]]:
    """Clean every output file; counts of files deleted/rewritten per output folder.

    A file that cannot be cleaned is counted as failed and the others go on; a fault of the machine
    (disk full, read-only) stops the withdrawal, which is safe to run again.
    """
    counts: dict[str, Counter] = {}
    for root in roots:
        if not root.exists():
            continue
        files = [root] if root.is_file() else sorted(q for q in root.rglob("*") if q.is_file() and not q.is_symlink())
        for p in files:
            if not p.exists():
                continue
            rel = p.relative_to(layout.root).as_posix()
            try:
                action = "deleted" if scrub.mentions(rel, ids) else _clean_file(p, ids, layout)
                if action == "deleted" and p.exists():
                    p.unlink()
            except OSError as e:
                if is_environment_fault(e):
                    raise environment_fault(e, f"cleaning {rel}") from e
                log.error("%s: could not be cleaned (%s)", rel, e.strerror)
                action = "failed"
            if action:
                counts.setdefault(_category(p, roots, layout), Counter())[action] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(counts.items())}


def models_to_retrain(layout: Layout, ids: set[str]) -> list[str]:
    """Checkpoints whose fold trained (train or val) on any of the takes: relative paths, no names."""
    hit: set[tuple[str, int]] = set()
    for f in sorted(layout.splits.glob("*.json")) if layout.splits.is_dir() else []:
        split = json.loads(f.read_text())
        for fold in split.get("folds", []):
            if any(t in ids for s in vocab.TRAINING_SPLITS for t in fold.get(s, [])):
                hit.add((f.stem, int(fold.get("fold", 0))))
    out = []
    if layout.models.is_dir():
        for p in sorted(layout.models.rglob("*.pt")):
            rel = p.relative_to(layout.models)
            if any(rel.parts[0] == proto and p.name.startswith(f"fold{k}_") for proto, k in hit):
                out.append(rel.as_posix())
    return out


def mark_for_retraining(layout: Layout, checkpoints: list[str]) -> None:
    """models/RETRAIN.json lists the checkpoints trained on withdrawn data until `dvc repro train` replaces them."""
    if not checkpoints:
        return
    f = layout.models / RETRAIN_NAME
    old = json.loads(f.read_text()).get("checkpoints", []) if f.is_file() else []
    io.write_json(
        f,
        {
            "reason": "trained on takes of a subject who withdrew consent: retrain (dvc repro train)",
            "checkpoints": sorted(set(old) | set(checkpoints)),
        },
    )
