"""Browser-playable proxies of takes: H.264 in MP4, yuv420p, even dimensions, moov first, constant rate.

Chromium and Firefox cannot decode MPEG-4 Part 2 (OpenCV's `mp4v`), so annotators would see no video.
PyAV (`av`) is the encoder: its wheel carries FFmpeg's libraries with libx264, so nothing outside the
lock is needed. Frame k of a proxy is frame k of the take: pts = k at 1/fps, no B-frames (decode order =
display order, no edit list shifting the first frame), and encoder threads fixed to 1 with bit-exact
flags so the same take and parameters always give the same bytes (DVC outputs do not churn).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from pipeline.errors import PipelineError

CODEC = "libx264"
PIX_FMT = "yuv420p"
# Tags matching the conversion below (BT.601 matrix, limited range), so browsers and decoders agree.
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1
_AVCOL_PRI_BT709 = 1
_AVCOL_TRC_BT709 = 1


class ProxyError(PipelineError, RuntimeError):
    """A proxy that could not be made or does not match its take; the message says why."""


@dataclass(frozen=True)
class MediaConfig:
    """Everything that changes a proxy's bytes (part of each proxy's cache key)."""

    crf: int
    preset: str
    keyframe_every: int
    min_height: int
    passthrough_playable: bool

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder sees in a video file: enough to say whether a browser can play it as it is."""

    container: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    n_frames: int  # frames actually decoded, not the header's claim
    constant_rate: bool  # every pts step equal
    first_pts_zero: bool
    moov_first: bool  # "+faststart": playback can start before the whole file arrives


def fps_fraction(fps: float) -> Fraction:
    """The take's frame rate as the exact rational FFmpeg wants (29.97002997 -> 30000/1001)."""
    if not math.isfinite(fps) or fps <= 0:
        raise ProxyError(f"frame rate {fps!r} is not a positive number")
    return Fraction(fps).limit_denominator(1001)


def _even(n: int) -> int:
    return n + (n % 2)


def target_size(width: int, height: int, min_height: int) -> tuple[int, int]:
    """(width, height) of the proxy: upscaled to at least `min_height` (aspect kept), both even."""
    if width < 1 or height < 1:
        raise ProxyError(f"frame size {width}x{height} is empty")
    if height >= min_height:
        return _even(width), _even(height)
    h = _even(min_height)
    return max(2, 2 * round(width * h / height / 2)), h  # nearest even width


def fit_frame(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One take frame (BGR) as an RGB frame of `size`: bicubic upscale, or a 1-pixel edge pad to even."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ProxyError(f"frame of shape {bgr.shape} and type {bgr.dtype} is not BGR uint8")
    w, h = size
    src_h, src_w = bgr.shape[:2]
    if (src_w, src_h) == (w, h):
        out = bgr
    elif src_w <= w and src_h <= h and w - src_w <= 1 and h - src_h <= 1:
        out = cv2.copyMakeBorder(bgr, 0, h - src_h, 0, w - src_w, cv2.BORDER_REPLICATE)
    else:
        out = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def encode_proxy(frames: Iterable[np.ndarray], dest: Path, fps: float, cfg: MediaConfig) -> tuple[int, int, int]:
    """Encode BGR frames into `dest` (MP4/H.264); returns (frames written, width, height).

    The size is fixed by the first frame; a later frame of another size is an error (a take has one size).
    """
    rate = fps_fraction(fps)
    container = av.open(
        str(dest), "w", format="mp4", options={"movflags": "+faststart"}, container_options={"fflags": "+bitexact"}
    )
    n, size, stream = 0, (0, 0), None
    # One converter for the take: its scaler context is built once, not per frame (same pixels).
    to_yuv = VideoReformatter()
    try:
        for bgr in frames:
            if stream is None:
                size = target_size(bgr.shape[1], bgr.shape[0], cfg.min_height)
                stream = _open_stream(container, rate, size, cfg)
                first_shape = bgr.shape
            elif bgr.shape != first_shape:
                raise ProxyError(
                    f"frame {n} is {bgr.shape[1]}x{bgr.shape[0]}, frame 0 was {first_shape[1]}x{first_shape[0]}"
                )
            frame = av.VideoFrame.from_ndarray(fit_frame(bgr, size), format="rgb24")
            frame = to_yuv.reformat(
                frame, format=PIX_FMT, dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG
            )
            frame.pts = n
            for packet in stream.encode(frame):
                container.mux(packet)
            n += 1
        if stream is None:
            raise ProxyError("the take has no frames")
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return n, size[0], size[1]


def x264_options(cfg: MediaConfig) -> dict[str, str]:
    """libx264's options for a proxy: one thread and bit-exact (same bytes anywhere), no B-frames, short GOPs."""
    return {
        "crf": str(cfg.crf),
        "preset": cfg.preset,
        "threads": "1",
        "bf": "0",
        "g": str(cfg.keyframe_every),
        "flags": "+bitexact",
    }


def _open_stream(container, rate: Fraction, size: tuple[int, int], cfg: MediaConfig):
    stream = container.add_stream(CODEC, rate=rate, options=x264_options(cfg))
    stream.width, stream.height = size
    stream.pix_fmt = PIX_FMT
    stream.time_base = 1 / rate
    cc = stream.codec_context
    cc.colorspace, cc.color_range = _AVCOL_SPC_SMPTE170M, _AVCOL_RANGE_MPEG
    cc.color_primaries, cc.color_trc = _AVCOL_PRI_BT709, _AVCOL_TRC_BT709
    return stream


def _moov_first(path: Path) -> bool:
    """True if the top-level `moov` box comes before `mdat` (walks the MP4 box headers only)."""
    with open(path, "rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                return False
            size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if kind in (b"moov", b"mdat"):
                return kind == b"moov"
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            elif size < 8:
                return False
            f.seek(size - 8, 1)
    return False


def probe_video(path: Path) -> VideoInfo:
    """Decode every frame of a video with PyAV; raises ProxyError naming the file if any frame fails."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ProxyError(f"{path}: no video stream")
            stream = container.streams.video[0]
            pts: list[int] = []
            width = height = 0
            for frame in container.decode(stream):
                pts.append(frame.pts if frame.pts is not None else -1)
                width, height = frame.width, frame.height
            return VideoInfo(
                container=container.format.name,
                codec=stream.codec_context.name,
                pix_fmt=stream.codec_context.pix_fmt or "",
                width=width,
                height=height,
                n_frames=len(pts),
                constant_rate=len({b - a for a, b in zip(pts, pts[1:])}) <= 1 and -1 not in pts,
                first_pts_zero=bool(pts) and pts[0] == 0,
                moov_first=_moov_first(Path(path)),
            )
    except av.FFmpegError as e:
        raise ProxyError(f"{path}: does not decode ({e})") from e


def decode_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a proxy as BGR uint8 (the comparison side of the frame-identity check)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(container.streams.video[0])]


def playable_problems(info: VideoInfo, expected_frames: int, min_height: int) -> list[str]:
    """Why a rig take cannot be served to a browser as it is (empty: it can)."""
    checks = [
        (
            "mp4" in info.container.split(",") or "mov" in info.container.split(","),
            f"container {info.container} is not MP4",
        ),
        (info.codec == "h264", f"codec {info.codec} is not H.264"),
        (info.pix_fmt == PIX_FMT, f"pixel format {info.pix_fmt} is not {PIX_FMT}"),
        (info.width % 2 == 0 and info.height % 2 == 0, f"size {info.width}x{info.height} is not even"),
        (info.height >= min_height, f"height {info.height} is below media.min_height {min_height}"),
        (info.n_frames == expected_frames, f"{info.n_frames} frames decoded, the manifest says {expected_frames}"),
        (info.constant_rate and info.first_pts_zero, "frame timestamps are not constant-rate from 0"),
        (info.moov_first, "moov box after mdat (not +faststart)"),
    ]
    return [msg for ok, msg in checks if not ok]
