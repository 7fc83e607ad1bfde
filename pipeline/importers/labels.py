"""Readers of the public datasets' label and split files. Pure parsing; each bad line is counted."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from pipeline.importers.common import ImportResult, rel


def clip_key(name: str) -> str:
    """A clip name as the label files write it and as the folder is named: `00042`, `42`, `42.mp4` -> `42`."""
    stem = Path(name.strip()).stem if "." in Path(name.strip()).name else name.strip()
    return str(int(stem)) if stem.isdigit() else stem


def read_video_label_csv(path: Path, src: Path, res: ImportResult) -> dict[str, str]:
    """DFEW `set_k.csv`: `video_name,label` rows (header optional) -> {clip key: raw code}."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if n == 1 and not row[-1].strip().lstrip("-").isdigit():
                continue  # header
            if len(row) < 2:
                res.exclude(
                    f"{rel(path, src)}:{n}", "bad_label_line", f"{rel(path, src)} line {n}: expected video_name,label"
                )
                continue
            out[clip_key(row[0])] = row[1].strip()
    return out


def read_space_list(path: Path, src: Path, res: ImportResult) -> dict[str, str]:
    """FERV39k/MAFW lists: `path label` per line (split on the last whitespace) -> {path: raw label}."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        parts = re.split(r"[\s,]+", line.strip())
        if len(parts) < 2:
            res.exclude(f"{rel(path, src)}:{n}", "bad_label_line", f"{rel(path, src)} line {n}: expected 'path label'")
            continue
        out[parts[0]] = parts[1]
    return out


def set_number(path: Path) -> str | None:
    """The k of `set_k` in a path (the file's or a parent folder's name)."""
    for part in reversed(path.parts):
        m = re.fullmatch(r"set_?(\d+)(\.\w+)?", part)
        if m:
            return m.group(1)
    return None
