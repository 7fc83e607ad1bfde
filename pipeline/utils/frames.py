"""The one reader of takes: a take is a video file or a folder of numbered frames (PNG/JPEG).

Ingest, align, media and release all read takes through these functions, so both kinds behave the
same everywhere: frames come out as BGR uint8 HxWx3 (OpenCV's order) in the order of the number in
the file name, and a take's sha256 is defined once here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import is_environment_fault
from pipeline.utils.io import sha256_file

FRAME_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_NUMBER_RE = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits in the stem
_CHUNK = 1 << 20


class FrameReadError(ValueError):
    """A frame or video that cannot be decoded; the message names the file."""


def frame_number(path: Path) -> int | None:
    """The number a frame file is ordered by: the last run of digits in its stem (None if it has none)."""
    m = _NUMBER_RE.search(Path(path).stem)
    return int(m.group(1)) if m else None


def _is_frame_file(p: Path) -> bool:
    # Hidden files (macOS "._0001.jpg" resource forks) and links are not frames of the take.
    return p.suffix.lower() in FRAME_SUFFIXES and not p.name.startswith(".") and not p.is_symlink() and p.is_file()


def _order_key(p: Path) -> tuple[int, int, str]:
    n = frame_number(p)
    return (0 if n is not None else 1, n if n is not None else 0, p.name)


def list_frame_files(folder: Path) -> list[Path]:
    """PNG/JPEG files directly in `folder`, ordered by the number in the name (then by name).

    Names without a number come last, by name. Links and hidden files are left out: a take's frames
    are its own plain files.
    """
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if _is_frame_file(p)), key=_order_key)


def is_frame_folder(path: Path) -> bool:
    """True for a real (not linked) directory holding at least one PNG/JPEG frame."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        return any(_is_frame_file(p) for p in path.iterdir())
    except OSError:
        return False


def read_frame(path: Path) -> np.ndarray:
    """One frame file as BGR uint8 HxWx3; raises FrameReadError naming the file if it does not decode."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # works for any file name, unlike cv2.imread
    except OSError as e:
        if is_environment_fault(e):  # out of memory or file handles: the machine's fault, not the frame's
            raise
        raise FrameReadError(f"{path}: cannot read ({e.strerror or e})") from e
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise FrameReadError(f"{path}: not a decodable PNG/JPEG image")
    return img


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Every frame of a take, BGR uint8 HxWx3: a video file decoded in order, or a frame folder's files."""
    path = Path(path)
    if path.is_dir():
        for f in list_frame_files(path):
            yield read_frame(f)
        return
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise FrameReadError(f"{path}: OpenCV cannot open this video")
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def take_sha256(path: Path) -> str:
    """sha256 of a take. A file: its bytes. A frame folder: over its frames in order, each as
    utf-8 name, NUL, 8-byte big-endian size, bytes — so renaming, reordering or editing a frame changes it."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in list_frame_files(path):
        h.update(f.name.encode("utf-8", "surrogateescape") + b"\0")
        h.update(f.stat().st_size.to_bytes(8, "big"))
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()
