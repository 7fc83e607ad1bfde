"""Purge a withdrawn subject from every release under `release/`: folders and their archives.

Each affected release is rebuilt in the temp area outside `release/` (a copy, or the archive
extracted with tarfile's safe `data` filter), purged, re-checksummed and re-archived with the
archive's own fixed timestamp, then renamed into place: a crash leaves either the old or the new
release, never a half-purged one inside the DVC output.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipeline.errors import environment_fault, is_environment_fault
from pipeline.privacy import scrub
from pipeline.release import build
from pipeline.utils import io

log = logging.getLogger(__name__)
_TEXT = {".md", ".txt", ".jsonl"}


def _epoch(archive: Path) -> int | None:
    """The fixed mtime the release was archived with (the same for every member)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            first = tar.next()
            return int(first.mtime) if first else None
    except (tarfile.TarError, OSError, EOFError):
        return None


def purge_folder(d: Path, ids: set[str], date: str) -> int:
    """Remove the ids from one release folder (a temp copy), every file rewritten atomically (io.write_*:
    a crash leaves each file whole); the number of takes removed."""
    takes_removed = 0
    for p in sorted(d.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(d).as_posix()
        if scrub.mentions(rel, ids):
            takes_removed += rel.startswith("aligned/")
            p.unlink()
        elif p.suffix == ".csv":
            df, n = scrub.frame(pd.read_csv(p, dtype=str, keep_default_na=False), ids)
            if n:
                io.write_csv(p, df)
        elif p.suffix == ".json" and p.name != "croissant.json":
            obj, n = scrub.json_value(json.loads(p.read_text()), ids)
            if n:
                io.write_text(p, json.dumps(obj, indent=1, sort_keys=True) + "\n")
        elif p.suffix in _TEXT:
            text, n = scrub.lines(p.read_text(), ids)
            if n:
                io.write_text(p, text)
    _fix_croissant(d)
    note = (
        f"\n## Amended {date}\n\n{takes_removed} takes removed after a withdrawal of consent; the figures in "
        "README.md and DATASHEET.md predate this amendment. Delete older copies of this release.\n"
    )
    for name in ("CHANGELOG.md", "README.md"):
        if (d / name).is_file():
            io.write_text(d / name, (d / name).read_text() + note)
    build.write_sums(d)
    return takes_removed


def _fix_croissant(d: Path) -> None:
    """Croissant lists each metadata file's sha256: refresh the ones purging changed."""
    p = d / "croissant.json"
    if not p.is_file():
        return
    doc = json.loads(p.read_text())
    for f in doc.get("distribution", []):
        target = d / str(f.get("contentUrl", ""))
        if target.is_file():
            f["sha256"] = io.sha256_file(target)
    io.write_text(p, json.dumps(doc, indent=1) + "\n")


def _mentions_tree(d: Path, ids: set[str]) -> bool:
    for p in d.rglob("*"):
        rel = p.relative_to(d).as_posix()
        if scrub.mentions(rel, ids):
            return True
        if (
            p.is_file()
            and not p.is_symlink()
            and p.suffix in {".csv", ".json", ".md", ".txt"}
            and scrub.mentions(p.read_text(errors="replace"), ids)
        ):
            return True
    return False


def extract_archive(archive: Path, dest: Path) -> None:
    """Unpack a release archive with tarfile's safe `data` filter (no links out, no devices)."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(dest, filter="data")


def purge_releases(
    out_root: Path,
    tmp_root: Path,
    ids: set[str],
    date: str,
    default_epoch: int,
    extract: Callable[[Path, Path], None] = extract_archive,
) -> dict:
    """Purge every release folder and archive under `out_root` (`Layout.release`, working in
    `Layout.stage_tmp("release")`); counts per outcome (no names). An archive that cannot be read is
    counted and left for the user; a fault of the machine (disk full) stops the purge. `extract`
    unpacks an archive (tests inject a failing one)."""
    out = {"releases_amended": 0, "release_takes_removed": 0, "archives_rebuilt": 0, "archives_unreadable": 0}
    if not out_root.is_dir():
        return out
    build.clean_leftovers(out_root, tmp_root)
    names = {p.name for p in out_root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    names |= {p.name[: -len(".tar.gz")] for p in out_root.glob("*.tar.gz") if not p.name.startswith(".")}
    for name in sorted(names):
        folder, archive = out_root / name, out_root / f"{name}.tar.gz"
        work = tmp_root / name
        tmp_root.mkdir(parents=True, exist_ok=True)
        if folder.is_dir():
            if not _mentions_tree(folder, ids):
                continue
            shutil.copytree(folder, work, symlinks=True)
        else:
            try:
                extract(archive, tmp_root)
            except (tarfile.TarError, OSError, EOFError) as e:
                if is_environment_fault(e):  # the disk, not the archive: stop, never count it as unreadable
                    shutil.rmtree(tmp_root, ignore_errors=True)
                    raise environment_fault(e, f"extracting {archive.name} to purge it") from e
                log.error("%s: cannot be read to purge it (%s)", archive.name, type(e).__name__)
                out["archives_unreadable"] += 1
                shutil.rmtree(tmp_root, ignore_errors=True)
                continue
            if not work.is_dir() or not _mentions_tree(work, ids):
                shutil.rmtree(tmp_root)
                continue
        epoch = (_epoch(archive) if archive.exists() else None) or default_epoch
        out["release_takes_removed"] += purge_folder(work, ids, date)
        tmp_archive = tmp_root / f"{name}.tar.gz"
        build.deterministic_tar(work, tmp_archive, epoch)
        if folder.is_dir():
            build.publish(work, tmp_archive, out_root)
        else:
            os.replace(tmp_archive, archive)
        out["archives_rebuilt"] += 1
        out["releases_amended"] += 1
        shutil.rmtree(tmp_root, ignore_errors=True)
    log.info("releases amended: %d", out["releases_amended"])
    return out
