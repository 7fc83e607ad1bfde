"""Pure functions that remove a set of identifiers (a subject id and its take ids) from data.

Each returns the cleaned value and how many items it removed, so the withdrawal can report counts
without ever naming what it removed.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
import pandas as pd

REDACTED = "[withdrawn]"


_EDGE = "A-Za-z0-9"


def pattern(ids: set[str]) -> re.Pattern[str]:
    """The compiled id regex, built once per set of ids (a withdrawal asks for it per file, row and cache object)."""
    return _pattern(frozenset(ids))


@functools.lru_cache(maxsize=8)
def _pattern(ids: frozenset[str]) -> re.Pattern[str]:
    """One regex matching any of the ids as a whole token: not inside a longer id (withdrawing `S1`
    must not match `S10_t03`), while `S1_t03` and `S1.npz` still match. Longest first, so a take
    id wins over its subject prefix."""
    alts = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
    return re.compile(f"(?<![{_EDGE}])(?:{alts})(?![{_EDGE}])")


def mentions(text: str, ids: set[str]) -> bool:
    return bool(ids) and pattern(ids).search(text) is not None


def text_of(data: bytes) -> str | None:
    """The bytes as UTF-8 text, or None for binary content (video, image, checkpoint, compressed
    data): those are never searched byte by byte, where a short id would match at random."""
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def frame(df: pd.DataFrame, ids: set[str]) -> tuple[pd.DataFrame, int]:
    """Drop every row with a text cell that mentions an id."""
    if not ids or df.empty:
        return df, 0
    rx = pattern(ids)
    hit = pd.Series(False, index=df.index)
    for col in df.columns:
        if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
            hit |= df[col].map(lambda v: isinstance(v, str) and rx.search(v) is not None)
    if any(isinstance(c, str) and rx.search(c) for c in df.columns):
        df = df[[c for c in df.columns if not (isinstance(c, str) and rx.search(c))]]
    return df[~hit].reset_index(drop=True), int(hit.sum())


def json_value(obj: Any, ids: set[str]) -> tuple[Any, int]:
    """Drop what mentions an id: a string in a list, a dict entry keyed by it, a record (a dict in a
    list whose own fields, through nested dicts, mention it: a task, a quarantined item); other
    strings that mention it become REDACTED. Lists inside a kept record are cleaned, not dropped
    (a split fold keeps its other takes)."""
    rx = pattern(ids) if ids else None
    removed = 0

    def walk(o: Any) -> Any:
        nonlocal removed
        if rx is None:
            return o
        if isinstance(o, dict):
            out = {}
            for k, v in o.items():
                if isinstance(k, str) and rx.search(k):
                    removed += 1
                    continue
                out[k] = walk(v)
            return out
        if isinstance(o, list):
            kept = []
            for v in o:
                if rx.search(_fields(v)):
                    removed += 1
                else:
                    kept.append(walk(v))
            return kept
        if isinstance(o, str) and rx.search(o):
            removed += 1
            return REDACTED
        return o

    return walk(obj), removed


def _fields(v: Any) -> str:
    """A list item's own text: a string itself, or a dict's keys and string values through nested
    dicts (not through lists, which hold other items)."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        return " ".join(f"{k} {_fields(x)}" for k, x in v.items() if not isinstance(x, list))
    return ""


def lines(text: str, ids: set[str]) -> tuple[str, int]:
    """Drop every line that mentions an id."""
    if not ids:
        return text, 0
    rx = pattern(ids)
    kept, removed = [], 0
    for line in text.splitlines(keepends=True):
        if rx.search(line):
            removed += 1
        else:
            kept.append(line)
    return "".join(kept), removed


def arrays_mention(arrays: dict[str, np.ndarray], ids: set[str]) -> bool:
    """True if a text array (take ids stored beside features, say) holds an id."""
    for a in arrays.values():
        if a.dtype.kind in ("U", "S", "O"):
            flat = [x.decode() if isinstance(x, bytes) else str(x) for x in a.ravel().tolist()]
            if any(mentions(x, ids) for x in flat):
                return True
    return False
