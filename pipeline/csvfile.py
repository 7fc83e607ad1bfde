"""Reading the project's small CSV tables (capture log, consent table) with file, line and field.

Why a module of its own: the consent ledger (`pipeline.consent`) and the capture-log schema
(`pipeline.ingest.schema`) both read CSV the same fail-closed way; keeping the reader here, importing
neither, means neither has to import the other for it.
"""

from __future__ import annotations

import csv
import io
import stat
from pathlib import Path

from pipeline.errors import PipelineError, environment_fault, is_environment_fault


class CaptureLogError(PipelineError, ValueError):
    """A capture log or consent table that cannot be trusted at all; names file, line and field."""

    def __init__(self, path: Path, message: str, line: int | None = None, column: str | None = None) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", field '{column}'"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.column = path, line, column


def read_csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs of a UTF-8 CSV; structural problems raise CaptureLogError."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read forever: never opened
            raise CaptureLogError(path, "is not a regular file (a FIFO, device or folder); not opened")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaptureLogError(path, "file not found") from None
    except OSError as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"reading {path}") from e
        raise CaptureLogError(path, f"cannot read: {e.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CaptureLogError(path, f"not valid UTF-8 (byte {e.start})", line=line) from None
    if not text.strip():
        raise CaptureLogError(path, "file is empty")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
        missing = [c for c in required if c not in header]
        if missing:
            raise CaptureLogError(
                path, f"missing column(s) {', '.join(missing)} in the header", line=1, column=missing[0]
            )
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise CaptureLogError(path, "column appears twice in the header", line=1, column=dupes[0])
        rows = []
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise CaptureLogError(path, f"expected {len(header)} fields, found {len(fields)}", line=line)
            rows.append((line, {h: f.strip() for h, f in zip(header, fields)}))
    except csv.Error as e:
        raise CaptureLogError(path, f"malformed CSV: {e}", line=reader.line_num) from None
    return rows
