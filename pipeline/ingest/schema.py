"""The capture log and the consent table: parsing and validation with file, line and field.

Structural damage (missing file, bad encoding, missing columns, a line with the wrong number of
fields) makes the whole log untrustworthy and is a `CaptureLogError`. A row whose *values* are
wrong (unknown enum, not a number, unsafe path) is kept and quarantined with its own reason, so
one typo does not stop a day's ingest and nothing is lost.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline import vocab
from pipeline.consent import Consent, read_ledger
from pipeline.csvfile import CaptureLogError, read_csv_rows

LOG_REQUIRED = vocab.CAPTURE_LOG_COLUMNS

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PORTABLE_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")  # POSIX portable filename character set
__all__ = [
    "LOG_REQUIRED",
    "PORTABLE_NAME_RE",
    "CaptureLogError",
    "LogRow",
    "Problem",
    "check_relative_path",
    "read_consent",
    "read_csv_rows",
    "validate_log_rows",
]


@dataclass(frozen=True)
class Problem:
    """One reason a take is quarantined: a stable code for reports, a sentence for people."""

    code: str
    message: str


@dataclass
class LogRow:
    """A capture log row: its line, the raw strings, the parsed values and what is wrong with it."""

    line: int
    raw: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _where(log_name: str, line: int, column: str) -> str:
    return f"{log_name} line {line}, field '{column}'"


def _float(row: LogRow, col: str, lo: float, hi: float, log_name: str) -> float | None:
    text = row.raw.get(col, "")
    try:
        x = float(text)
    except ValueError:
        row.problems.append(Problem("bad_value", f"{_where(log_name, row.line, col)}: {text!r} is not a number"))
        return None
    if not math.isfinite(x) or not lo <= x <= hi:
        row.problems.append(Problem("bad_value", f"{_where(log_name, row.line, col)}: {x} is outside [{lo}, {hi}]"))
        return None
    return x


def check_relative_path(text: str) -> Problem | None:
    """A log `file` must be a relative path that stays inside the raw folder and has a portable name."""
    if not text:
        return Problem("bad_value", "is empty")
    if "\\" in text or "\x00" in text:
        return Problem("path_escape", f"{text!r} contains a backslash or NUL")
    p = PurePosixPath(text)
    if p.is_absolute():
        return Problem("path_escape", f"{text!r} is an absolute path; paths must be relative to the raw folder")
    if ".." in p.parts:
        return Problem("path_escape", f"{text!r} contains '..' and would escape the raw folder")
    if not PORTABLE_NAME_RE.match(p.name):
        return Problem("non_portable_name", f"file name {p.name!r} is not in the portable set [A-Za-z0-9._-]")
    return None


def validate_log_rows(
    rows: list[tuple[int, dict[str, str]]],
    expressions: list[str],
    illuminations: list[str],
    log_name: str = "capture_log.csv",
) -> list[LogRow]:
    """Parse every row; each value problem becomes a Problem naming line and field."""
    out = []
    for line, raw in rows:
        row = LogRow(line=line, raw=raw)
        v = row.values
        for col in ("take_id", "subject_id", "session", "camera"):
            text = raw.get(col, "")
            if not text:
                row.problems.append(Problem("bad_value", f"{_where(log_name, line, col)}: is empty"))
            elif not _ID_RE.match(text):
                row.problems.append(
                    Problem(
                        "bad_value", f"{_where(log_name, line, col)}: {text!r} has characters outside [A-Za-z0-9._-]"
                    )
                )
            v[col] = text or None
        # An empty pose is "unknown" (imported in-the-wild clips say nothing about it), never a guess.
        v["yaw"] = _float(row, "yaw", -90, 90, log_name) if raw.get("yaw", "") else None
        v["pitch"] = _float(row, "pitch", -90, 90, log_name) if raw.get("pitch", "") else None
        v["fps"] = _float(row, "fps", 1e-6, 10_000, log_name)
        for col, allowed in (("illumination", illuminations), ("prompted_expression", expressions)):
            text = raw.get(col, "")
            if text not in allowed:
                row.problems.append(
                    Problem("bad_value", f"{_where(log_name, line, col)}: {text!r} is not one of {', '.join(allowed)}")
                )
                v[col] = None
            else:
                v[col] = text
        text = raw.get("recorded_at", "")
        try:
            v["recorded_at"] = datetime.fromisoformat(text).isoformat()
        except ValueError:
            row.problems.append(
                Problem("bad_value", f"{_where(log_name, line, 'recorded_at')}: {text!r} is not an ISO 8601 time")
            )
            v["recorded_at"] = None
        problem = check_relative_path(raw.get("file", ""))
        if problem:
            row.problems.append(Problem(problem.code, f"{_where(log_name, line, 'file')}: {problem.message}"))
        # An unsafe path is never opened; a merely non-portable name still identifies its file.
        safe = problem is None or problem.code == "non_portable_name"
        v["file"] = str(PurePosixPath(raw["file"])) if safe else None
        out.append(row)
    _mark_duplicate_ids(out, log_name)
    return out


def _mark_duplicate_ids(rows: list[LogRow], log_name: str) -> None:
    """Two rows with one take_id are ambiguous: every one of them is quarantined, naming the others."""
    by_id: dict[str, list[int]] = {}
    for r in rows:
        if r.values.get("take_id"):
            by_id.setdefault(r.values["take_id"], []).append(r.line)
    for r in rows:
        lines = by_id.get(r.values.get("take_id") or "", [])
        if len(lines) > 1:
            others = ", ".join(str(n) for n in lines if n != r.line)
            r.problems.append(
                Problem(
                    "duplicate_take_id",
                    f"{log_name} line {r.line}: take_id {r.values['take_id']!r} also on line(s) {others}",
                )
            )


def read_consent(path: Path) -> tuple[dict[str, Consent], dict[str, str]]:
    """Consent records by subject, and subjects whose record is unusable with the reason why.

    Delegates to the one fail-closed parser, `pipeline.consent` (shared with the release and
    `mvfer consent withdraw`): an invalid or duplicated record means no consent.
    """
    ledger = read_ledger(path)
    return ledger.records, ledger.invalid
