"""DVC cache entries that hold a withdrawn subject, and the remotes this command cannot reach.

Old versions of `data/aligned`, the manifest or a release stay in `.dvc/cache` after the workspace
is cleaned, so the cache is searched too: a directory listing (`.dir`) naming a take, every object
such a listing points to for that take, every object with the content of a file being removed, and
every text, parquet or gzip/tar object whose content mentions an id (at id boundaries; binary
objects are matched by md5 only, never byte-searched).
"""

from __future__ import annotations

import configparser
import gzip
import hashlib
import io as _io
import json
import logging
import tarfile
import zlib
from pathlib import Path

import pandas as pd

from pipeline.privacy import scrub

log = logging.getLogger(__name__)
_SCAN_LIMIT = 512 << 20  # objects larger than this are matched by md5 only


def md5_file(p: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - DVC names its cache objects by md5; not used for security
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _object_md5(p: Path) -> str:
    return (p.parent.name + p.name).removesuffix(".dir")


def _mentions(data: bytes, ids: set[str]) -> bool:
    """Whether an object's content mentions an id, read by its structure: text (a `.dir` listing, CSV,
    JSON, Markdown) at id boundaries, parquet by its cells, gzip (a release archive) by member names
    and text members. Other binary objects (video, images, checkpoints, arrays) are never
    byte-searched, where a short id matches at random: they go only by md5 (a file being removed,
    or an entry of a `.dir` listing that names a take)."""
    if data[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return False
        try:
            with tarfile.open(fileobj=_io.BytesIO(raw)) as tar:
                for m in tar:
                    if scrub.mentions(m.name, ids):
                        return True
                    f = tar.extractfile(m) if m.isfile() and m.size <= _SCAN_LIMIT else None
                    if f is not None and _mentions(f.read(), ids):
                        return True
            return False
        except tarfile.TarError:
            return _mentions(raw, ids)
    if data[:4] == b"PAR1":
        try:
            df = pd.read_parquet(_io.BytesIO(data))
        except Exception:  # noqa: BLE001 - not a readable parquet file: matched by md5 only
            return False
        return scrub.frame(df, ids)[1] > 0
    text = scrub.text_of(data)
    return text is not None and scrub.mentions(text, ids)


def purge(cache: Path, ids: set[str], doomed_md5: set[str]) -> int:
    """Delete the cache objects that hold the ids; returns how many."""
    if not cache.is_dir():
        return 0
    files = [
        p for p in cache.rglob("*") if p.is_file() and not p.is_symlink() and "runs" not in p.relative_to(cache).parts
    ]
    doomed = set(doomed_md5)
    for p in files:
        if p.name.endswith(".dir"):
            try:
                entries = json.loads(p.read_text())
            except (ValueError, UnicodeDecodeError):
                continue
            for e in entries if isinstance(entries, list) else []:
                if isinstance(e, dict) and scrub.mentions(str(e.get("relpath", "")), ids):
                    doomed.add(str(e.get("md5", "")))
    removed = 0
    for p in files:
        if not p.exists():
            continue
        hit = _object_md5(p) in doomed
        if not hit and p.stat().st_size <= _SCAN_LIMIT:
            hit = _mentions(p.read_bytes(), ids)
        if hit:
            p.unlink()
            removed += 1
    log.info("DVC cache: %d object(s) removed", removed)
    return removed


def cache_dir(dvc_dir: Path) -> Path:
    """The project's DVC cache: `cache.dir` from the config (relative to .dvc/), else .dvc/cache."""
    for f in (dvc_dir / "config.local", dvc_dir / "config"):
        if f.is_file():
            cp = configparser.ConfigParser()
            try:
                cp.read(f)
            except configparser.Error:
                continue
            if cp.has_option("cache", "dir"):
                d = Path(cp.get("cache", "dir"))
                return d if d.is_absolute() else (dvc_dir / d).resolve()
    return dvc_dir / "cache"


def remotes(dvc_dir: Path) -> list[str]:
    """Names of the configured DVC remotes (project and local config)."""
    names = []
    for f in (dvc_dir / "config", dvc_dir / "config.local"):
        if f.is_file():
            cp = configparser.ConfigParser()
            try:
                cp.read(f)
            except configparser.Error:
                continue
            sections = [s.strip("'") for s in cp.sections()]  # DVC writes ['remote "name"']
            names += [s.split('"')[1] for s in sections if s.startswith("remote ") and s.count('"') == 2]
    return sorted(set(names))
