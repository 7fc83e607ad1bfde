"""Probe a video by decoding it, not by trusting its header.

A file is what its bytes say: the container is sniffed from its first bytes, an MP4's top-level
boxes are walked (a recording cut short leaves a box that runs past the end of the file), and every
frame is decoded and counted.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2

from pipeline.utils.io import sha256_file


@dataclass(frozen=True)
class ProbeResult:
    size_bytes: int
    sha256: str
    container: str | None = None
    n_frames: int | None = None          # frames actually decoded
    header_frames: int | None = None     # what the container claims
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    error_code: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def sniff_container(head: bytes) -> str | None:
    """Container family from magic bytes, or None when they match no video container we know."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    return None


def check_mp4_boxes(path: Path, size: int) -> str | None:
    """Walk the top-level boxes; return a reason if the file is cut short or lacks its index."""
    seen = []
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            f.seek(offset)
            hdr = f.read(8)
            if len(hdr) < 8:
                return f"truncated container: {size - offset} stray bytes after the last box at offset {offset}"
            box_size, box_type = struct.unpack(">I4s", hdr)
            name = box_type.decode("latin-1")
            if box_size == 1:
                ext = f.read(8)
                if len(ext) < 8:
                    return f"truncated container: box '{name}' at offset {offset} is cut off"
                box_size = struct.unpack(">Q", ext)[0]
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                return f"corrupt container: box '{name}' at offset {offset} declares {box_size} bytes"
            if offset + box_size > size:
                return (f"truncated container: box '{name}' at offset {offset} declares {box_size} bytes, "
                        f"only {size - offset} present")
            seen.append(name)
            offset += box_size
    if "moov" not in seen:
        return "no 'moov' index box: the recording was not finalised or was cut short"
    return None


def probe_video(path: Path) -> ProbeResult:
    """Hash, sniff and fully decode one file; problems go into error_code/error, never raise."""
    size = path.stat().st_size
    digest = sha256_file(path)
    if size == 0:
        return ProbeResult(size, digest, error_code="empty_file", error="file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(16)
    container = sniff_container(head)
    if container == "mp4":
        reason = check_mp4_boxes(path, size)
        if reason:
            return ProbeResult(size, digest, container, error_code="truncated", error=reason)

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            what = f"a {container} container OpenCV cannot open" if container else f"not a video (starts with {head[:8]!r})"
            return ProbeResult(size, digest, container, error_code="not_a_video", error=what)
        header_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        n, shape = 0, None
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if shape is None:
                shape = frame.shape
            elif frame.shape != shape:
                return ProbeResult(size, digest, container, n + 1, header_frames, error_code="corrupt",
                                   error=f"frame {n} is {frame.shape[1]}x{frame.shape[0]}, earlier frames {shape[1]}x{shape[0]}")
            n += 1
    finally:
        cap.release()
    if n == 0 or shape is None:
        what = "no frame could be decoded" if container else f"not a video (starts with {head[:8]!r}); no frame decoded"
        return ProbeResult(size, digest, container, 0, header_frames, error_code="not_a_video", error=what)
    h, w = int(shape[0]), int(shape[1])
    duration = n / fps if fps > 0 else None
    if header_frames and n < header_frames:
        return ProbeResult(size, digest, container, n, header_frames, w, h, fps, duration, error_code="truncated",
                           error=f"truncated: decoded {n} of the {header_frames} frames the header declares")
    return ProbeResult(size, digest, container, n, header_frames, w, h, fps, duration)
