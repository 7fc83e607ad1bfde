"""`mvfer release verify`: is this release folder or archive exactly what was built?

Every member is read in full (the gzip stream to its CRC, each aligned `.npz` array to its zip
CRC), so damage is found here and not on a user's machine. Anything unexpected (a link, a device,
a member outside the one top folder, a malformed `SHA256SUMS` line, an archive that does not
decompress) is a one-line problem in the result, never a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import io as _io
import logging
import re
import stat
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.release.build import SUMS, load_problem

_SUM_LINE = re.compile(r"^([0-9a-f]{64})  (\S(?:.*\S)?)$")
_TEXTS = (SUMS, "metadata/takes.csv")
_CHUNK = 1 << 20
log = logging.getLogger(__name__)


@dataclass
class _Seen:
    """What was read from the release: sha256 per member (relative path), the small texts, problems."""

    actual: dict[str, str] = field(default_factory=dict)
    texts: dict[str, bytes] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _unsafe(rel: str) -> bool:
    p = PurePosixPath(rel)
    return rel.startswith("/") or ".." in p.parts or rel == "" or "\\" in rel


def _take(seen: _Seen, rel: str, data: bytes) -> None:
    if rel in _TEXTS:
        seen.texts[rel] = data
    if rel.startswith("aligned/") and rel.endswith(".npz"):
        problem = load_problem(_io.BytesIO(data))
        if problem:
            seen.problems.append(f"{rel}: {problem}")
    if rel != SUMS:
        seen.actual[rel] = hashlib.sha256(data).hexdigest()


def _read_folder(target: Path) -> _Seen:
    seen = _Seen()
    for p in sorted(target.rglob("*")):
        rel = p.relative_to(target).as_posix()
        mode = p.lstat().st_mode
        if stat.S_ISLNK(mode):
            seen.problems.append(f"{rel}: is a link (a release holds only regular files)")
        elif stat.S_ISDIR(mode):
            continue
        elif not stat.S_ISREG(mode):
            seen.problems.append(f"{rel}: is a special file (device, fifo or socket)")
        else:
            try:
                _take(seen, rel, p.read_bytes())
            except OSError as e:
                seen.problems.append(f"{rel}: cannot be read ({e.strerror})")
    return seen


def _check_gzip(target: Path) -> str | None:
    """Decompress the whole stream: the gzip CRC and length are only checked at its very end."""
    try:
        with gzip.open(target, "rb") as g:
            while g.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as e:
        return f"{target.name}: damaged archive, does not decompress ({type(e).__name__}: {e})"
    return None


def _read_archive(target: Path) -> _Seen:
    seen = _Seen()
    damaged = _check_gzip(target)
    if damaged:
        seen.problems.append(damaged)
        return seen
    top: str | None = None
    try:
        with tarfile.open(target, "r:gz") as tar:
            for m in tar:
                name = m.name.rstrip("/")
                first = name.split("/", 1)[0]
                top = top or first
                if _unsafe(name):
                    seen.problems.append(f"member {m.name!r}: absolute path or '..' (unsafe)")
                    continue
                if first != top:
                    seen.problems.append(f"member {m.name!r}: outside the release's one top folder {top!r}")
                    continue
                if m.issym() or m.islnk():
                    seen.problems.append(f"member {m.name!r}: is a link (a release holds only regular files)")
                elif m.isdir():
                    if name != top and "/" not in name:
                        seen.problems.append(f"member {m.name!r}: unexpected folder")
                elif not m.isfile():
                    seen.problems.append(f"member {m.name!r}: is a device, fifo or other special member")
                elif "/" not in name:
                    seen.problems.append(f"member {m.name!r}: a file outside the release's top folder")
                else:
                    f = tar.extractfile(m)
                    _take(seen, name.split("/", 1)[1], f.read() if f else b"")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        seen.problems.append(f"{target.name}: damaged archive ({type(e).__name__}: {e})")
    return seen


def _parse_sums(text: bytes) -> tuple[dict[str, str], list[str]]:
    expected: dict[str, str] = {}
    problems: list[str] = []
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return {}, [f"{SUMS}: not valid UTF-8"]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _SUM_LINE.match(line)
        if not m:
            problems.append(f"{SUMS} line {n}: not '<64 lowercase hex>  <relative path>'")
        elif _unsafe(m.group(2)):
            problems.append(f"{SUMS} line {n}: unsafe path {m.group(2)!r}")
        elif m.group(2) in expected:
            problems.append(f"{SUMS} line {n}: {m.group(2)} listed twice")
        else:
            expected[m.group(2)] = m.group(1)
    return expected, problems


def _take_table_problems(seen: _Seen) -> list[str]:
    if "metadata/takes.csv" not in seen.texts:
        return ["metadata/takes.csv is missing"]
    try:
        listed = set(pd.read_csv(_io.BytesIO(seen.texts["metadata/takes.csv"]))["aligned_file"])
    except (ValueError, KeyError) as e:
        return [f"metadata/takes.csv: unreadable ({type(e).__name__})"]
    present = {k for k in seen.actual if k.startswith("aligned/")}
    return [f"{f} is listed in metadata/takes.csv but absent" for f in sorted(listed - present)] + [
        f"{f} is not listed in metadata/takes.csv" for f in sorted(present - listed)
    ]


def verify(target: Path) -> dict:
    """Check a release folder or `.tar.gz`; `ok` only if every check passes. Names every missing,
    extra and altered file, and every other problem in one line each."""
    target = Path(target)
    if target.is_dir():
        seen = _read_folder(target)
    elif target.is_file():
        seen = _read_archive(target)
    else:
        return {
            "ok": False,
            "missing": [],
            "extra": [],
            "altered": [],
            "checked": 0,
            "manifest_problems": [],
            "problems": [f"{target}: not a release folder or archive"],
        }
    problems = list(seen.problems)
    if SUMS not in seen.texts:
        return {
            "ok": False,
            "missing": [SUMS],
            "extra": [],
            "altered": [],
            "checked": 0,
            "manifest_problems": [],
            "problems": problems,
        }
    expected, sum_problems = _parse_sums(seen.texts[SUMS])
    problems += sum_problems
    missing = sorted(set(expected) - set(seen.actual))
    extra = sorted(set(seen.actual) - set(expected))
    altered = sorted(k for k in set(expected) & set(seen.actual) if expected[k] != seen.actual[k])
    manifest_problems = _take_table_problems(seen)
    ok = not (missing or extra or altered or manifest_problems or problems)
    return {
        "ok": ok,
        "missing": missing,
        "extra": extra,
        "altered": altered,
        "checked": len(set(expected) & set(seen.actual)),
        "manifest_problems": manifest_problems,
        "problems": problems,
    }


def verify_command(target: Path) -> int:
    """`mvfer release verify TARGET`: every problem logged in one line each, then one verdict line on
    stdout (`<target>: OK|FAILED (N files checked)`); 0 when the release is intact, 1 otherwise."""
    res = verify(target)
    for kind in ("missing", "extra", "altered"):
        for f in res[kind]:
            log.error("%s: %s", kind, f)
    for msg in res.get("manifest_problems", []):
        log.error("manifest: %s", msg)
    for msg in res.get("problems", []):
        log.error("%s", msg)
    sys.stdout.write(f"{target}: {'OK' if res['ok'] else 'FAILED'} ({res['checked']} files checked)\n")
    return 0 if res["ok"] else 1
