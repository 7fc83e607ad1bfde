"""What every importer shares: the take record, counted exclusions, and writing the rig layout.

An importer only *reads* a public dataset's tree and says which takes it holds (`ImportResult`).
`write_rig` turns that into the folder ingest reads (capture log, consent table, `takes/`), linking
the source files (hard links: no bytes copied, no symlink for ingest to refuse) or copying them when
`import.copy` is true. Nothing is ever written under the source tree.
"""

from __future__ import annotations

import csv
import errno
import io as _io
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from pipeline import vocab
from pipeline.errors import PipelineError, environment_fault, is_environment_fault
from pipeline.layout import CAPTURE_LOG_NAME, SUBJECTS_NAME, TAKES_SUBDIR
from pipeline.params import ImportParams
from pipeline.registry import Registry
from pipeline.utils import io
from pipeline.utils.frames import list_frame_files

log = logging.getLogger(__name__)

# Capture-log columns ingest requires, then the columns importers add (carried into the manifest).
LOG_COLUMNS = list(vocab.CAPTURE_LOG_COLUMNS)
EXTRA_COLUMNS = ["dataset", "dataset_label", "official_fold", "source_path"]
SUBJECT_COLUMNS = ["subject_id", "consent_research", "consent_public_release", "withdrawn", "consent_basis"]
UNKNOWN_TIME = "1970-01-01T00:00:00"  # the public datasets do not say when a clip was recorded
IMPORT_INFO = "import.json"
IMPORT_REPORT = "import_report.json"
OWN_RECORDINGS = frozenset({"recordings"})  # layouts of a lab's own recordings: consent from its table only
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class DatasetImportError(PipelineError, ValueError):
    """An import that cannot start (source missing, output inside the source, ...); one line."""


@dataclass(frozen=True)
class Take:
    """One take found in the source tree: a frame folder or a video file, and what is known of it."""

    take_id: str
    subject_id: str
    source: Path  # frame folder or video file inside the source tree
    label: str  # the dataset's label, already mapped to an expression name
    fps: float
    yaw: float | None = None  # None: unknown (in-the-wild datasets); written empty
    pitch: float | None = None
    illumination: str = "unknown"
    official_fold: str = ""  # DFEW/MAFW: the test set (1-5) the clip is in; FERV39k/AFEW: train/test
    fields: dict[str, str] = field(default_factory=dict)  # mode fields from the path (imaging, light, scene)
    n_frames: int | None = None  # a video's frame count as its stream says (None: frame folder or not known)


@dataclass(frozen=True)
class Exclusion:
    """Something in the source tree that did not become a take, with a stable code and a sentence."""

    path: str
    code: str  # unknown_label, missing_label, empty_folder, label_not_in_rig, ...
    reason: str


@dataclass
class ImportResult:
    layout: str
    takes: list[Take] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the layout cannot tell (subjects, pose, ...)

    def exclude(self, path: Path | str, code: str, reason: str) -> None:
        self.excluded.append(Exclusion(str(path), code, reason))


class Importer(Protocol):
    """`scan(src, params.import, rig expressions)`: the takes a dataset tree holds, read only."""

    def __call__(self, src: Path, cfg: ImportParams, expressions: list[str]) -> ImportResult: ...


# The import layouts by name (`mvfer import <layout>`): each importer module registers its scan here.
IMPORTERS: Registry[Importer] = Registry("import layout")


def safe_id(*parts: str) -> str:
    """A take or subject id in ingest's allowed set [A-Za-z0-9._-], readable and stable."""
    text = "-".join(_UNSAFE.sub("_", p).strip("_") for p in parts if p)
    return text if text and text[0].isalnum() else f"x{text}"


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def frame_take(folder: Path) -> list[Path]:
    """The frame files of a candidate take folder (empty if it holds none)."""
    try:
        return list_frame_files(folder)
    except OSError:
        return []


def check_label(
    result: ImportResult,
    where: str,
    label: str | None,
    raw: str,
    allowed: list[str],
    key: str = "import.label_maps",
) -> str | None:
    """The mapped label if usable; otherwise a listed exclusion naming the params key to edit (`key`)."""
    if label is None:
        result.exclude(
            where,
            "unknown_label",
            f"{where}: label {raw!r} is neither an expression in rig.expressions nor in params.yaml {key}",
        )
        return None
    if label not in allowed:
        result.exclude(
            where, "label_not_in_rig", f"{where}: label {label!r} is not in rig.expressions (params.yaml: {key})"
        )
        return None
    return label


def check_source(src: Path, out: Path) -> None:
    """Refuse an import that could write into the source, before anything is written."""
    if not src.is_dir():
        raise DatasetImportError(f"{src}: source folder not found")
    s, o = src.resolve(), out.resolve()
    if o == s or s in o.parents:
        raise DatasetImportError(
            f"{out}: the output must be outside the source tree {src} (the source is never written)"
        )
    if o in s.parents:
        raise DatasetImportError(f"{out}: the output must not contain the source tree {src}")
    if out.is_dir() and any(out.iterdir()) and not (out / IMPORT_INFO).is_file():
        raise DatasetImportError(
            f"{out}: exists, is not empty and holds no {IMPORT_INFO}: not an earlier import, "
            "so nothing in it is overwritten (choose an empty or new folder)"
        )


def link_or_copy(src: Path, dest: Path, copy: bool) -> None:
    """The one call that puts a source file under takes/ (a test passes another to simulate failures)."""
    if copy:
        shutil.copy2(src, dest)
    else:
        os.link(src, dest)


Link = Callable[[Path, Path, bool], None]


def place_take(take: Take, takes_dir: Path, copy: bool, link: Link = link_or_copy) -> str:
    """Put a take under takes/ (frame folder or video) and return its path relative to the raw folder.

    Hard links reference the source bytes without copying them and look like plain files to every
    reader; across filesystems (no hard link possible) the take becomes one symlink to the source,
    which ingest follows because import.json names the source root. `copy` copies instead.
    """
    name = take.take_id if take.source.is_dir() else f"{take.take_id}{take.source.suffix.lower()}"
    dest, tmp = takes_dir / name, takes_dir / f".{name}.tmp"
    for p in (tmp, dest):
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
    try:
        if take.source.is_dir():
            tmp.mkdir(parents=True)
            for f in frame_take(take.source):
                link(f, tmp / f.name, copy)
        else:
            link(take.source, tmp, copy)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        if is_environment_fault(e):  # a full disk is not the take's fault: stop, write no log
            raise environment_fault(e, f"placing {take.source} into {takes_dir}") from e
        if copy or e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise DatasetImportError(f"{take.source}: cannot place into {takes_dir} ({e.strerror})") from None
        os.symlink(take.source.resolve(), tmp, target_is_directory=take.source.is_dir())
    os.replace(tmp, dest)
    return f"{TAKES_SUBDIR}/{name}"


def _remove_stale(takes_dir: Path, placed: set[str]) -> None:
    """Takes an earlier import of this folder placed and this one did not: our own links, removed."""
    for entry in sorted(takes_dir.iterdir()):
        if f"{TAKES_SUBDIR}/{entry.name}" in placed:
            continue
        log.info("removing %s: placed by an earlier import, not by this one", entry)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:g}"


def log_rows(takes: list[Take], files: dict[str, str], src: Path, layout: str, field_names: list[str]) -> list[dict]:
    rows = []
    for t in takes:
        row = {
            "take_id": t.take_id,
            "subject_id": t.subject_id,
            "session": "s1",
            "camera": t.fields.get("camera") or "unknown",  # never a camera nobody named
            "yaw": _num(t.yaw),
            "pitch": _num(t.pitch),
            "illumination": t.illumination,
            "prompted_expression": t.label,
            "fps": f"{t.fps:g}",
            "recorded_at": UNKNOWN_TIME,
            "file": files[t.take_id],
            "dataset": "" if layout in OWN_RECORDINGS else layout,  # the lab's own: no third-party licence
            "dataset_label": t.label,
            "official_fold": t.official_fold,
            "source_path": rel(t.source, src),
        }
        # Only the fields this take has: a field another take has (a sidecar's camera for one file) must not
        # blank this row's value; a column nobody gave this take is written empty.
        row |= {k: v for k, v in t.fields.items() if v != "" or k not in row}
        for k in field_names:
            row.setdefault(k, "")
        rows.append(row)
    return rows


def subject_rows(takes: list[Take], licence_terms: str, research_use: bool, redistribution: bool) -> list[dict]:
    """Consent left blank for the lab to fill (ingest quarantines blanks), unless the licence grants it."""
    granted = bool(licence_terms) and research_use
    rows = []
    for sid in sorted({t.subject_id for t in takes}):
        rows.append(
            {
                "subject_id": sid,
                "consent_research": "true" if granted else "",
                "consent_public_release": ("true" if redistribution else "false") if granted else "",
                "withdrawn": "false" if granted else "",
                "consent_basis": f"dataset licence: {licence_terms}" if granted else "",
            }
        )
    return rows


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def merge_subjects(existing: str | None, rows: list[dict], where: Path) -> tuple[str | None, int, int]:
    """The consent table to write on (re-)import: (text or None to leave the file as it is, rows kept, rows added).

    A re-import must never undo what the lab recorded (consent filled in, a withdrawal): existing rows
    are kept as they are, with every column; only subjects not yet in the table are added, with the
    fields a fresh import gives them (blank unless the licence grants consent).
    """
    if existing is None:
        return _csv_text(rows, SUBJECT_COLUMNS), 0, len(rows)
    reader = csv.DictReader(_io.StringIO(existing.removeprefix("\ufeff")))
    fields = list(reader.fieldnames or [])
    if "subject_id" not in fields:
        raise DatasetImportError(
            f"{where}: no subject_id column; this consent table is not overwritten, fix or move it"
        )
    old = [{k: v for k, v in r.items() if k is not None} for r in reader]  # None: cells beyond the header
    known = {(r.get("subject_id") or "").strip() for r in old}
    added = [r for r in rows if r["subject_id"] not in known]
    if not added:
        return None, len(old), 0
    columns = fields + [c for c in SUBJECT_COLUMNS if c not in fields]
    return _csv_text(old + added, columns), len(old), len(added)


def write_rig(
    result: ImportResult,
    src: Path,
    out: Path,
    *,
    copy: bool,
    licence_terms: str,
    research_use: bool,
    redistribution: bool,
    link: Link = link_or_copy,
) -> dict:
    """Write the raw folder ingest reads; returns the import report (also written as import_report.json).

    A take that cannot be placed is excluded with its reason and the others go on; a fault of the
    machine (disk full) stops the import before the capture log and the report are written.
    """
    check_source(src, out)
    takes_dir = out / TAKES_SUBDIR
    takes_dir.mkdir(parents=True, exist_ok=True)
    dup = Counter(t.take_id for t in result.takes)
    kept: list[Take] = []
    for t in result.takes:
        if dup[t.take_id] > 1:
            result.exclude(
                rel(t.source, src),
                "duplicate_take_id",
                f"{rel(t.source, src)}: take id {t.take_id} is produced by {dup[t.take_id]} source paths",
            )
        else:
            kept.append(t)
    files: dict[str, str] = {}
    for t in tqdm(kept, desc="import", unit="take"):
        try:
            files[t.take_id] = place_take(t, takes_dir, copy, link)
        except DatasetImportError as e:  # one unreadable source take never stops the import
            result.exclude(rel(t.source, src), "cannot_place", str(e))
    kept = [t for t in kept if t.take_id in files]
    _remove_stale(takes_dir, set(files.values()))
    field_names = sorted({k for t in kept for k in t.fields})
    columns = LOG_COLUMNS + EXTRA_COLUMNS + [f for f in field_names if f not in LOG_COLUMNS + EXTRA_COLUMNS]
    io.write_text(out / CAPTURE_LOG_NAME, _csv_text(log_rows(kept, files, src, result.layout, field_names), columns))
    ledger = out / SUBJECTS_NAME
    table, subjects_kept, subjects_added = merge_subjects(
        ledger.read_text(encoding="utf-8") if ledger.is_file() else None,
        subject_rows(kept, licence_terms, research_use, redistribution),
        ledger,
    )
    if table is not None:
        io.write_text(ledger, table)
    granted = bool(licence_terms) and research_use
    info = {
        "layout": result.layout,
        "source_root": str(src.resolve()),
        "copied": copy,
        "licence": {"terms": licence_terms, "research_use": research_use, "redistribution": redistribution},
        "mode_fields": field_names,
    }
    io.write_json(out / IMPORT_INFO, info)
    report: dict[str, Any] = {
        "layout": result.layout,
        "source": str(src),
        "out": str(out),
        "takes": len(kept),
        "frames": sum(len(frame_take(t.source)) if t.source.is_dir() else (t.n_frames or 0) for t in kept),
        "by_subject": dict(sorted(Counter(t.subject_id for t in kept).items())),
        "fps": dict(sorted(Counter(f"{t.fps:g}" for t in kept).items())),
        "subjects": len({t.subject_id for t in kept}),
        "by_label": dict(sorted(Counter(t.label for t in kept).items())),
        "by_official_fold": dict(sorted(Counter(t.official_fold for t in kept if t.official_fold).items())),
        "excluded": len(result.excluded),
        "excluded_by_reason": dict(sorted(Counter(e.code for e in result.excluded).items())),
        "excluded_items": [{"path": e.path, "reason_code": e.code, "reason": e.reason} for e in result.excluded],
        "consent": "granted by the dataset licence (import.licence)"
        if granted
        else "left blank in subjects.csv: ingest quarantines every take until the lab fills it or sets import.licence",
        "consent_table": {"rows_kept": subjects_kept, "subjects_added": subjects_added},
        "notes": result.notes,
    }
    io.write_json(out / IMPORT_REPORT, report)
    log.info(
        "%s: %d takes of %d subjects imported into %s; %d excluded (%s)",
        result.layout,
        report["takes"],
        report["subjects"],
        out,
        report["excluded"],
        ", ".join(f"{k}: {v}" for k, v in report["excluded_by_reason"].items()) or "none",
    )
    return report
