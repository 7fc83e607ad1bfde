"""The one consent ledger: a fail-closed parser of `subjects.csv` used by every stage.

Ingest, the release and `mvfer consent withdraw` must agree on who may be used, so there is one
parser and one rule: a value that is not clearly true or false (blank, unknown, a date, `x`), a
subject listed twice, or a subject missing from the table means *excluded*, with a reason. Doubt
never lets a face through. Structural damage (no file, bad encoding, missing column) raises
`CaptureLogError` naming file, line and field: the whole table is untrustworthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import vocab
from pipeline.csvfile import CaptureLogError, read_csv_rows

_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "f"})

# Why a subject is excluded (stable codes shared by the ingest manifest and the release report).
UNKNOWN_SUBJECT = "unknown_subject"
CONSENT_INVALID = "consent_invalid"
CONSENT_WITHDRAWN = "consent_withdrawn"
NO_RESEARCH_CONSENT = "no_research_consent"
NO_PUBLIC_RELEASE_CONSENT = "no_public_release_consent"


@dataclass(frozen=True)
class Consent:
    """One usable consent record (every flag parsed to a definite bool)."""

    subject_id: str
    research: bool
    public_release: bool
    withdrawn: bool
    line: int


@dataclass(frozen=True)
class Exclusion:
    """Why a subject may not be used: a stable code for reports and a sentence for people."""

    code: str
    message: str


@dataclass(frozen=True)
class Ledger:
    """Parsed consent: usable records, and subjects whose record is unusable (with the reason)."""

    records: dict[str, Consent] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    source: str = "subjects.csv"

    def research_exclusion(self, subject_id: str) -> Exclusion | None:
        """None when the subject's takes may be used for research; otherwise why not."""
        if subject_id in self.invalid:
            return Exclusion(
                CONSENT_INVALID, f"subject {subject_id}: consent record unusable ({self.invalid[subject_id]})"
            )
        c = self.records.get(subject_id)
        if c is None:
            return Exclusion(UNKNOWN_SUBJECT, f"subject {subject_id} is not in {self.source}")
        if c.withdrawn:
            return Exclusion(CONSENT_WITHDRAWN, f"subject {subject_id} withdrew consent ({self.source} line {c.line})")
        if not c.research:
            return Exclusion(
                NO_RESEARCH_CONSENT,
                f"subject {subject_id} has not consented to research use ({self.source} line {c.line})",
            )
        return None

    def release_exclusion(self, subject_id: str) -> Exclusion | None:
        """None when the subject's takes may be published; otherwise why not."""
        ex = self.research_exclusion(subject_id)
        if ex is not None:
            return ex
        c = self.records[subject_id]
        if not c.public_release:
            return Exclusion(
                NO_PUBLIC_RELEASE_CONSENT,
                f"subject {subject_id} has not consented to public release ({self.source} line {c.line})",
            )
        return None

    def withdrawn(self) -> set[str]:
        """Subjects whose takes must be removed everywhere: withdrawn, or with an unusable record."""
        return {s for s, c in self.records.items() if c.withdrawn} | set(self.invalid)


def parse_flag(text: str | None) -> bool | None:
    """True/False for a clear yes/no; None for anything else (blank, a date, `x`, `withdrawn`)."""
    if text is None:
        return None
    t = str(text).strip().lower()
    return True if t in _TRUE else False if t in _FALSE else None


def parse_rows(rows: list[tuple[int, dict[str, str]]], path: Path) -> Ledger:
    """The ledger from (line, row) pairs; a blank subject_id is structural damage."""
    records: dict[str, Consent] = {}
    invalid: dict[str, str] = {}
    seen: dict[str, int] = {}
    for line, raw in rows:
        sid = (raw.get("subject_id") or "").strip()
        if not sid:
            raise CaptureLogError(path, "subject_id is empty", line=line, column="subject_id")
        if sid in seen:
            invalid[sid] = f"{path.name} lines {seen[sid]} and {line} both describe {sid}"
            records.pop(sid, None)
            continue
        seen[sid] = line
        flags: dict[str, bool] = {}
        for col in vocab.CONSENT_FLAGS:
            value = parse_flag(raw.get(col))
            if value is None:
                invalid.setdefault(
                    sid, f"{path.name} line {line}, field '{col}': {raw.get(col, '')!r} is not true/false"
                )
            else:
                flags[col] = value
        if sid not in invalid:
            records[sid] = Consent(
                sid, flags[vocab.CONSENT_RESEARCH], flags[vocab.CONSENT_PUBLIC], flags[vocab.WITHDRAWN], line
            )
    return Ledger(records, invalid, path.name)


def read_ledger(path: Path) -> Ledger:
    """Read and parse `subjects.csv` (fail-closed, see the module docstring)."""
    return parse_rows(read_csv_rows(path, vocab.SUBJECTS_REQUIRED), path)


# --- redaction: a withdrawn subject's takes stay counted, never identified ------------------------
REDACTED_REASON = "take of a subject who withdrew consent; identifiers removed"
IDENTIFYING_COLUMNS = ("take_id", "path", "sha256", "subject_id", "recorded_at", "source_path", "file")


def redact_manifest(df: pd.DataFrame, ids: set[str] | frozenset[str] = frozenset()) -> tuple[pd.DataFrame, set[str]]:
    """Blank the identifying fields of rows quarantined as `consent_withdrawn` (or naming one of
    `ids`), keeping status, codes and log line so the counts still add up. Returns the frame and the
    take ids it removed."""
    col = "reason_codes" if "reason_codes" in df else "reason_code"
    codes = (df[col] if col in df else pd.Series("", index=df.index)).fillna("")
    hit = codes.astype(str).str.split(",").map(lambda cs: CONSENT_WITHDRAWN in cs)
    for col in ("take_id", "subject_id"):
        if ids and col in df:
            hit |= df[col].isin(ids)
    gone = {str(t) for t in df.loc[hit, "take_id"].dropna()} if "take_id" in df else set()
    if not hit.any():
        return df, gone
    df = df.copy()
    for col in IDENTIFYING_COLUMNS:
        if col in df:
            df[col] = df[col].astype(object)
            df.loc[hit, col] = None
    if "reason" in df:
        df.loc[hit, "reason"] = REDACTED_REASON
    if "status" in df:
        df.loc[hit, "status"] = vocab.QUARANTINED
    if "reason_code" in df:
        df.loc[hit, "reason_code"] = CONSENT_WITHDRAWN
    return df, gone


def redact_report(report: dict, gone: set[str]) -> dict:
    """The ingest report's quarantined items, with the same fields blanked as in the manifest."""
    items = []
    for it in report.get("quarantined_items", []):
        if it.get("take_id") in gone or it.get("reason_code") == CONSENT_WITHDRAWN:
            it = it | {"take_id": None, "path": None, "reason_code": CONSENT_WITHDRAWN, "reason": REDACTED_REASON}
        items.append(it)
    return report | {"quarantined_items": items} if "quarantined_items" in report else report


def redact_withdrawn(df: pd.DataFrame, report: dict) -> tuple[pd.DataFrame, dict]:
    """Ingest's last step: withdrawn subjects' takes are counted in the manifest and report, never named."""
    df, gone = redact_manifest(df)
    return df, redact_report(report, gone)
