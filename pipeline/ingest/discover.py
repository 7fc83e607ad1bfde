"""Find every entry under the takes folder and say what it is, without opening anything unsafe.

Only `lstat` and directory listing happen here: a FIFO is never opened (opening one blocks), a link
is followed only when it lands inside an allowed root, and a folder that cannot be listed or is
reached through a link is itself an entry with a reason, so nothing under the raw folder is skipped
unseen. The probe workers then open only entries of kind `video` or `frames`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import environment_fault, is_environment_fault
from pipeline.layout import TAKES_SUBDIR
from pipeline.utils.frames import FRAME_SUFFIXES

VIDEO, FRAMES, BAD = "video", "frames", "bad"
IMPORT_INFO_NAME = "import.json"  # written by `mvfer import`: {"source_root": "/abs/path", ...}


@dataclass(frozen=True)
class Entry:
    """One thing found under the raw folder: a take to probe, or a bad entry with its reason."""

    path: Path
    kind: str  # VIDEO | FRAMES | BAD
    code: str | None = None  # reason code when BAD
    reason: str | None = None
    size_bytes: int | None = None
    hidden_entries: int = 0  # entries inside a folder that was not walked (linked folder), counted


def display_path(rel: str) -> str:
    """A relative path as text that survives JSON and Parquet, even if its bytes are not UTF-8."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _decodable(rel: str) -> bool:
    try:
        rel.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def list_dir(path: Path) -> list[os.DirEntry]:
    """The one listing call (a test passes another to simulate a folder that root can still read)."""
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


ListDir = Callable[[Path], list[os.DirEntry]]


def _input_fault(e: OSError, doing: str) -> OSError:
    """`e` when it is a fault of the entry (permission, I/O error); a fault of the machine stops ingest."""
    if is_environment_fault(e):
        raise environment_fault(e, doing) from e
    return e


def allowed_roots(raw: Path) -> list[Path]:
    """Where a link may lead: the raw folder, and the source tree an importer recorded in import.json."""
    roots = [raw.resolve()]
    info = raw / IMPORT_INFO_NAME
    if info.is_file() and not info.is_symlink():
        try:
            src = json.loads(info.read_text(encoding="utf-8")).get("source_root")
        except (OSError, ValueError, AttributeError):
            src = None
        if isinstance(src, str) and os.path.isabs(src):
            roots.append(Path(src).resolve())
    return roots


def _inside(target: Path, roots: list[Path]) -> bool:
    return any(target == r or r in target.parents for r in roots)


def _special_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


def _has_frames(entries: list[os.DirEntry]) -> bool:
    return any(
        Path(e.name).suffix.lower() in FRAME_SUFFIXES
        and not e.name.startswith(".")
        and e.is_file(follow_symlinks=False)
        for e in entries
    )


def _count_entries(path: Path) -> int | None:
    """Entries below a folder that is not walked, without following links further (None if unlistable)."""
    n = 0
    try:
        for _, dirnames, filenames in os.walk(path, followlinks=False):
            n += len(dirnames) + len(filenames)
    except OSError:
        return None
    return n


def _follow_link(path: Path, roots: list[Path], list_dir: ListDir) -> Entry:
    """A link is a take only if it resolves, stays inside an allowed root and lands on a file or frame folder."""
    target_text = os.readlink(path)
    try:
        target = path.resolve(strict=True)
    except RuntimeError:
        return Entry(path, BAD, "link_loop", f"is a link ({target_text!r}) that loops back on itself")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Entry(path, BAD, "link_loop", f"is a link ({target_text!r}) that loops back on itself")
        return Entry(path, BAD, "dangling_link", f"is a link to {target_text!r}, which does not exist")
    if not _inside(target, roots):
        return Entry(path, BAD, "path_escape", "is a link that resolves outside the raw folder; not opened")
    st = os.stat(target)
    if stat.S_ISREG(st.st_mode):
        return Entry(path, VIDEO, size_bytes=st.st_size)
    if stat.S_ISDIR(st.st_mode):
        try:
            listing = list_dir(target)
        except OSError as e:
            _input_fault(e, f"listing {target}")
            return Entry(path, BAD, "unreadable", f"is a link to a folder that cannot be listed ({e.strerror or e})")
        if _has_frames(listing) and not any(e.is_dir(follow_symlinks=False) for e in listing):
            return Entry(path, FRAMES)
        n = _count_entries(target)
        return Entry(
            path,
            BAD,
            "linked_folder",
            f"is a link to a folder ({n if n is not None else 'an unknown number of'} entries inside, not followed); "
            "link a frame folder or a file instead",
            hidden_entries=n or 0,
        )
    return Entry(path, BAD, "special_file", f"is a link to {_special_kind(st.st_mode)}; special files are never opened")


def classify(path: Path, roots: list[Path], list_dir: ListDir = list_dir) -> Entry:
    """What one path is, using lstat only (never opens it). Directories are classified by the walker."""
    try:
        st = os.lstat(path)
    except OSError as e:
        _input_fault(e, f"examining {path}")
        return Entry(path, BAD, "unreadable", f"cannot be examined ({e.strerror or e})")
    if stat.S_ISLNK(st.st_mode):
        return _follow_link(path, roots, list_dir)
    if stat.S_ISREG(st.st_mode):
        if not _inside(path.resolve(), roots):  # reached through a linked folder in the log's path
            return Entry(path, BAD, "path_escape", "resolves outside the raw folder; not opened")
        return Entry(path, VIDEO, size_bytes=st.st_size)
    if stat.S_ISDIR(st.st_mode):
        try:
            listing = list_dir(path)
        except OSError as e:
            _input_fault(e, f"listing {path}")
            return Entry(path, BAD, "unreadable", f"is a folder that cannot be listed ({e.strerror or e})")
        if _has_frames(listing):
            return Entry(path, FRAMES)
        return Entry(path, BAD, "not_a_take", "is a folder without PNG/JPEG frames")
    return Entry(path, BAD, "special_file", f"is {_special_kind(st.st_mode)}; special files are never opened")


def discover(raw: Path, list_dir: ListDir = list_dir) -> dict[str, Entry]:
    """Every entry under the takes folder by relative posix path (hidden ones too: nothing is skipped unseen).

    A folder holding PNG/JPEG frames is one take (its other entries are listed on their own); a folder
    that cannot be listed is an entry with reason `unreadable`.
    """
    takes = raw / TAKES_SUBDIR
    found: dict[str, Entry] = {}
    if not takes.is_dir():  # a linked takes/ is walked: each entry is then judged by where it resolves
        return found
    roots = allowed_roots(raw)

    def rel_of(p: Path) -> str:
        return display_path(p.relative_to(raw).as_posix())

    def add(entry: Entry) -> None:
        rel = entry.path.relative_to(raw).as_posix()
        if entry.kind != BAD and not _decodable(rel):
            entry = Entry(
                entry.path, BAD, "undecodable_name", "name is not valid UTF-8 (shown with \\x escapes); not opened"
            )
        found[rel_of(entry.path)] = entry

    stack = [takes]
    while stack:
        folder = stack.pop()
        try:
            listing = list_dir(folder)
        except OSError as e:
            _input_fault(e, f"listing {folder}")
            add(
                Entry(
                    folder,
                    BAD,
                    "unreadable",
                    f"is a folder that cannot be listed ({e.strerror or e}); its entries are not counted",
                )
            )
            continue
        if folder != takes and not listing:
            add(Entry(folder, BAD, "empty_folder", "is an empty folder"))
            continue
        if folder != takes and _has_frames(listing):
            add(Entry(folder, FRAMES))
            frame_names = {
                e.name
                for e in listing
                if Path(e.name).suffix.lower() in FRAME_SUFFIXES
                and not e.name.startswith(".")
                and e.is_file(follow_symlinks=False)
            }
            listing = [e for e in listing if e.name not in frame_names]
        subdirs = []
        for item in listing:
            p = Path(item.path)
            if item.is_dir(follow_symlinks=False):
                subdirs.append(p)
            else:
                add(classify(p, roots, list_dir))
        stack.extend(reversed(subdirs))
    return found
