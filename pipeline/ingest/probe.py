"""Probe a take by decoding it, not by trusting its header.

A file is what its bytes say: the container is sniffed from its first bytes, an MP4's top-level
boxes are walked (a recording cut short leaves a box that runs past the end of the file), and every
frame is decoded with FFmpeg's error detection on (PyAV), so damage inside the stream is counted per
frame instead of being concealed. A frame folder is probed by decoding every frame file; its
numbering (gaps, duplicates) and frame sizes are checked.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import cv2

from pipeline.errors import environment_fault, is_environment_fault
from pipeline.utils.frames import FrameReadError, frame_number, list_frame_files, read_frame, take_sha256
from pipeline.utils.io import sha256_file

FRAMES_CONTAINER = "frames"
# FFmpeg decoder checks: CRCs where the codec has them, bitstream and buffer sanity.
ERR_DETECT = "crccheck+bitstream+buffer"


@dataclass(frozen=True)
class ProbeResult:
    size_bytes: int
    sha256: str
    container: str | None = None
    n_frames: int | None = None  # frames actually decoded
    header_frames: int | None = None  # what the container claims
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    error_code: str | None = None
    error: str | None = None
    damaged_frames: int | None = None  # frames the decoder flagged corrupt or failed on

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
                return (
                    f"truncated container: box '{name}' at offset {offset} declares {box_size} bytes, "
                    f"only {size - offset} present"
                )
            seen.append(name)
            offset += box_size
    if "moov" not in seen:
        return "no 'moov' index box: the recording was not finalised or was cut short"
    return None


def _quiet_ffmpeg() -> None:
    """FFmpeg logs each concealed error to stderr; we count them instead."""
    av.logging.set_level(av.logging.PANIC)


@dataclass
class _Decoded:
    """What one pass of the decoder over a video saw."""

    n: int = 0  # frames decoded
    damaged: int = 0  # frames flagged corrupt, packets that failed, a read error mid-stream
    first_bad: int | None = None  # index of the first damaged frame
    shape: tuple[int, int] | None = None  # (width, height) of the first frame
    mixed: str | None = None  # the first frame of another size, as a sentence
    header_frames: int = 0
    fps: float = 0.0
    open_error: str | None = None  # the container could not be opened at all

    def damage(self) -> None:
        self.damaged += 1
        self.first_bad = self.n if self.first_bad is None else self.first_bad


def _machine(e: BaseException, path: Path) -> None:
    """FFmpeg out of memory (av.error.MemoryError) is the machine's fault, not the file's: stop."""
    if is_environment_fault(e):
        raise environment_fault(e, f"decoding {path}") from e


def _decode_av(path: Path) -> _Decoded:
    """Decode every frame with FFmpeg's error detection on; count damage instead of concealing it."""
    _quiet_ffmpeg()
    d = _Decoded()
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeError, ValueError) as e:
        _machine(e, path)
        d.open_error = str(e)
        return d
    try:
        if not container.streams.video:
            d.open_error = "no video stream"
            return d
        stream = container.streams.video[0]
        stream.codec_context.options = {"err_detect": ERR_DETECT}
        d.header_frames = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        d.fps = float(rate) if rate else 0.0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                _machine(e, path)
                d.damage()
                continue
            for frame in frames:
                if frame.is_corrupt:
                    d.damage()
                size = (frame.width, frame.height)
                if d.shape is None:
                    d.shape = size
                elif size != d.shape and d.mixed is None:
                    d.mixed = f"frame {d.n} is {size[0]}x{size[1]}, earlier frames {d.shape[0]}x{d.shape[1]}"
                d.n += 1
    except av.error.FFmpegError as e:
        _machine(e, path)
        d.damage()  # the demuxer gave up mid-stream: what was decoded so far stays counted
    finally:
        container.close()
    return d


def probe_video(path: Path, hasher: Callable[[Path], str] = sha256_file) -> ProbeResult:
    """Hash, sniff and fully decode one file; problems of the file go into error_code/error, never raise.

    A fault of the machine (memory, file handles) is not the file's: it is raised as EnvironmentFault.
    """
    try:
        size = path.stat().st_size
        digest = hasher(path)
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"probing {path}") from e
        return ProbeResult(0, "", error_code="unreadable", error=f"cannot be read ({e.strerror or e})")
    if size == 0:
        return ProbeResult(size, digest, error_code="empty_file", error="file is empty (0 bytes)")
    container = sniff_container(head)
    if container == "mp4":
        reason = check_mp4_boxes(path, size)
        if reason:
            return ProbeResult(size, digest, container, error_code="truncated", error=reason)

    d = _decode_av(path)
    if d.open_error is not None:
        what = (
            f"a {container} container that cannot be opened ({d.open_error})"
            if container
            else f"not a video (starts with {head[:8]!r})"
        )
        return ProbeResult(size, digest, container, error_code="not_a_video", error=what)
    if d.n == 0 or d.shape is None:
        what = "no frame could be decoded" if container else f"not a video (starts with {head[:8]!r}); no frame decoded"
        return ProbeResult(
            size, digest, container, 0, d.header_frames, error_code="not_a_video", error=what, damaged_frames=d.damaged
        )
    w, h = d.shape
    duration = d.n / d.fps if d.fps > 0 else None
    base: dict[str, Any] = dict(
        size_bytes=size,
        sha256=digest,
        container=container,
        n_frames=d.n,
        header_frames=d.header_frames,
        width=w,
        height=h,
        fps=d.fps,
        duration_s=duration,
        damaged_frames=d.damaged,
    )
    if d.damaged:
        return ProbeResult(
            **base,
            error_code="corrupt",
            error=f"damaged stream: the decoder found errors in {d.damaged} of {d.n} frames "
            f"(first at frame {d.first_bad})",
        )
    if d.mixed:
        return ProbeResult(**base, error_code="corrupt", error=d.mixed)
    if d.header_frames and d.n < d.header_frames:
        return ProbeResult(
            **base,
            error_code="truncated",
            error=f"truncated: decoded {d.n} of the {d.header_frames} frames the header declares",
        )
    return ProbeResult(**base)


_END_MARKERS = {".png": b"IEND\xaeB`\x82", ".jpg": b"\xff\xd9", ".jpeg": b"\xff\xd9"}


def _cut_short(path: Path) -> bool:
    """A PNG must end with its IEND chunk, a JPEG with EOI: a frame cut short still decodes partly."""
    marker = _END_MARKERS.get(path.suffix.lower())
    if marker is None:
        return False
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().rstrip(b"\0")
    return not tail.endswith(marker)


def numbering_problem(files: list[Path]) -> tuple[str, str] | None:
    """Gaps, duplicates or missing numbers in a frame folder's file names, as (code, sentence)."""
    numbers = [frame_number(f) for f in files]
    unnumbered = [f.name for f, k in zip(files, numbers) if k is None]
    if unnumbered:
        return "frame_numbering", f"frame file {unnumbered[0]!r} has no number in its name ({len(unnumbered)} such)"
    seen: dict[int, str] = {}
    for f, k in zip(files, numbers):
        if k is None:  # none left: unnumbered files returned above
            continue
        if k in seen:
            return "frame_numbering", f"frame number {k} appears twice ({seen[k]!r} and {f.name!r})"
        seen[k] = f.name
    ordered = sorted(seen)
    gaps = [(a, b) for a, b in zip(ordered, ordered[1:]) if b != a + 1]
    if gaps:
        missing = sum(b - a - 1 for a, b in gaps)
        a, b = gaps[0]
        return "frame_gap", f"{missing} frame number(s) missing, first gap after {a} (next is {b})"
    return None


def probe_frames(folder: Path) -> ProbeResult:
    """Hash and decode every frame of a frame-folder take; fps comes from the capture log, not from here."""
    try:
        files = list_frame_files(folder)
        size = sum(f.stat().st_size for f in files)
        digest = take_sha256(folder)
    except OSError as e:
        if is_environment_fault(e):
            raise environment_fault(e, f"probing {folder}") from e
        return ProbeResult(
            0, "", FRAMES_CONTAINER, error_code="unreadable", error=f"cannot be read ({e.strerror or e})"
        )
    if not files:
        return ProbeResult(
            size, digest, FRAMES_CONTAINER, 0, error_code="not_a_take", error="folder holds no PNG/JPEG frames"
        )
    shape: tuple[int, int] | None = None
    mixed: str | None = None
    damaged: list[str] = []
    for i, f in enumerate(files):
        try:
            img = read_frame(f)
            cut = _cut_short(f)
        except (FrameReadError, OSError):
            damaged.append(f.name)
            continue
        if cut:
            damaged.append(f.name)
        hw = (int(img.shape[1]), int(img.shape[0]))
        if shape is None:
            shape = hw
        elif hw != shape and mixed is None:
            mixed = f"frame {i} ({f.name}) is {hw[0]}x{hw[1]}, earlier frames {shape[0]}x{shape[1]}"
    n = len(files)
    w, h = shape if shape else (None, None)
    base: dict[str, Any] = dict(
        size_bytes=size,
        sha256=digest,
        container=FRAMES_CONTAINER,
        n_frames=n,
        header_frames=n,
        width=w,
        height=h,
        damaged_frames=len(damaged),
    )
    if damaged:
        return ProbeResult(
            **base,
            error_code="corrupt",
            error=f"{len(damaged)} of {n} frame files do not decode or are cut short (first: {damaged[0]!r})",
        )
    if mixed:
        return ProbeResult(**base, error_code="mixed_frame_sizes", error=mixed)
    numbering = numbering_problem(files)
    if numbering:
        return ProbeResult(**base, error_code=numbering[0], error=numbering[1])
    return ProbeResult(**base)


def probe_take(path: Path) -> ProbeResult:
    """Either kind of take: a frame folder or a video file (runs in a supervised worker process)."""
    cv2.setNumThreads(1)
    return probe_frames(path) if path.is_dir() else probe_video(path)
