"""Atomic writes, hashing, and a deterministic self-verifying .npz writer.

Every output is written to a temporary file and renamed into place, so a killed run never leaves a
half-written file that looks complete. The temp file sits beside the destination unless the caller
names `tmp_dir` (same filesystem, outside any DVC output), so no temp file is ever inside an output.

`write_npz` gives the same bytes for the same arrays on any machine and run (fixed zip member
timestamps, attributes and order) and records the file's own sha256 in the zip comment, so any
flipped or missing byte is detected by `npz_problem` without an index beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import environment_fault, is_environment_fault

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish_mode(path: Path) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual umask modes."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~_umask())


@contextmanager
def atomic_path(dest: Path, suffix: str = "", tmp_dir: Path | None = None) -> Iterator[Path]:
    """Yield a temp path (beside `dest`, or in `tmp_dir` on the same filesystem); rename it onto
    `dest` only if the block succeeds.

    A failure to create, fill or rename the output (disk full, read-only, no permission) is a
    fault of the environment, never of an input: it is raised as `EnvironmentFault`.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        where = Path(tmp_dir) if tmp_dir is not None else dest.parent
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=where)
        os.close(fd)
    except OSError as e:
        raise environment_fault(e, f"cannot write {dest}") from e
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publish_mode(tmp_path)
        os.replace(tmp_path, dest)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if is_environment_fault(e):
            raise environment_fault(e, f"cannot write {dest}") from e
        raise


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a fresh temp directory beside `dest`; swap it in for `dest` on success."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as e:
        raise environment_fault(e, f"cannot write {dest}") from e
    try:
        yield tmp
        _publish_mode(tmp)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_environment_fault(e):
            raise environment_fault(e, f"cannot write {dest}") from e
        raise


def write_bytes(dest: Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: Path, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: Path, obj: Any) -> None:
    """Deterministic JSON (sorted keys, trailing newline) so DVC hashes stay stable."""
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def write_parquet(dest: Path, df: pd.DataFrame) -> None:
    with atomic_path(dest, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(dest: Path, df: pd.DataFrame) -> None:
    with atomic_path(dest, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---- deterministic, self-verifying .npz ---------------------------------------------------------

NPZ_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch: member timestamps never depend on the clock
_DIGEST_TAG = b"sha256:"
_DIGEST_LEN = 64
_COMMENT_LEN = len(_DIGEST_TAG) + _DIGEST_LEN


@dataclass(frozen=True)
class RawArray:
    """An array too large for memory, already on disk as raw C-order bytes: streamed into the .npz."""

    path: Path
    dtype: np.dtype
    shape: tuple[int, ...]


def _member_info(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(f"{name}.npy", date_time=NPZ_DATE_TIME)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.create_system = 3  # unix, whatever the writing OS
    zi.external_attr = 0o644 << 16  # fixed mode bits, not the umask's
    return zi


def _write_member(zf: zipfile.ZipFile, name: str, value: np.ndarray | RawArray) -> None:
    with zf.open(_member_info(name), "w", force_zip64=True) as w:
        if isinstance(value, RawArray):
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(value.dtype)),
                "fortran_order": False,
                "shape": tuple(int(n) for n in value.shape),
            }
            np.lib.format.write_array_header_1_0(w, header)
            with open(value.path, "rb") as src:
                shutil.copyfileobj(src, w, _CHUNK)
        else:
            np.lib.format.write_array(w, np.asarray(value), version=(1, 0), allow_pickle=False)


def _seal(path: Path) -> str:
    """Hash every byte but the digest's own 64 and write the digest into the zip comment."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        left = size - _DIGEST_LEN
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            h.update(chunk)
            left -= len(chunk)
        digest = h.hexdigest()
        f.seek(size - _DIGEST_LEN)
        f.write(digest.encode("ascii"))
    return digest


def write_npz(dest: Path, arrays: Mapping[str, np.ndarray | RawArray], tmp_dir: Path | None = None) -> str:
    """Write `arrays` (in the mapping's order) as a compressed .npz, atomically; returns its sha256.

    Same arrays, same bytes: member timestamps, attributes and order are fixed, so the file's hash
    depends only on the content (and the zlib build's deflate output). The sha256 of every byte
    before the digest is stored in the zip comment; `np.load` ignores it, `npz_problem` checks it.
    """
    with atomic_path(dest, suffix=".npz", tmp_dir=tmp_dir) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, value in arrays.items():
                _write_member(zf, name, value)
            zf.comment = _DIGEST_TAG + b"0" * _DIGEST_LEN
        digest = _seal(tmp)
    return digest


def npz_sha256(path: Path) -> str | None:
    """The sha256 a `write_npz` file records about itself (None if it carries none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < _COMMENT_LEN + 2:
                return None
            f.seek(-(_COMMENT_LEN + 2), os.SEEK_END)
            tail = f.read()
    except OSError:
        return None
    if int.from_bytes(tail[:2], "little") != _COMMENT_LEN or not tail[2:].startswith(_DIGEST_TAG):
        return None
    digest = tail[2 + len(_DIGEST_TAG) :]
    return digest.decode("ascii") if all(c in b"0123456789abcdef" for c in digest) else None


def npz_problem(path: Path) -> str | None:
    """Why a `write_npz` file cannot be trusted (one line), or None when every byte is as written."""
    path = Path(path)
    recorded = npz_sha256(path)
    if recorded is None:
        return f"{path.name}: no sha256 recorded in the zip comment (truncated, damaged or not written by write_npz)"
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            left = path.stat().st_size - _DIGEST_LEN
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
    except OSError as e:
        return f"{path.name}: unreadable ({e.strerror or e})"
    if h.hexdigest() != recorded:
        return f"{path.name}: sha256 {h.hexdigest()[:12]}... differs from the recorded {recorded[:12]}... (damaged)"
    return None
