"""Benchmark the media stage beside its floor, in one run, on takes of the current manifest.

Rows (one core, CPU seconds of this process, interleaved take by take so a busy machine slows every
row alike; frames/s counts the takes' frames):

- `stage`: `make_proxy`, what each media worker runs per take: decode the take, upscale, convert to
  yuv420p, encode (PyAV's libx264, in process), then decode the proxy again to prove its frame count.
- `encode`: `encode_proxy` alone on the decoded take (upscale, convert, encode; no source decode, no proof).
- `floor: x264`: the same frames, upscaled and converted to yuv420p beforehand and held in memory,
  encoded by libx264 with the stage's options into ONE stream in this process: no per-take start-up,
  no decoding, no conversion. The stage cannot beat it.
- `x264 per take`: the same as the floor, but one stream (one encoder start-up) per take.

`--presets` repeats the rows for other x264 presets (the stage's own comes first). Prints a table;
asserts nothing. Needs `dvc repro ingest` first.

    python scripts/bench_media.py [--takes 40] [--presets medium]
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pandas as pd
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from pipeline.layout import Layout
from pipeline.media.encode import (
    CODEC,
    PIX_FMT,
    MediaConfig,
    encode_proxy,
    fit_frame,
    target_size,
    x264_options,
)
from pipeline.media.proxy import make_proxy
from pipeline.media.stage import _take_fps, media_config
from pipeline.params import load_params
from pipeline.utils.frames import iter_frames


def _yuv(frames: list[np.ndarray], cfg: MediaConfig) -> list[np.ndarray]:
    """A take's frames as the encoder receives them: upscaled, yuv420p planes."""
    size = target_size(frames[0].shape[1], frames[0].shape[0], cfg.min_height)
    conv = VideoReformatter()
    out = []
    for bgr in frames:
        f = av.VideoFrame.from_ndarray(fit_frame(bgr, size), format="rgb24")
        f = conv.reformat(f, format=PIX_FMT, dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG)
        out.append(f.to_ndarray())
    return out


class _X264:
    """One libx264 stream with the stage's options, written to memory."""

    def __init__(self, cfg: MediaConfig, fps: float, height: int, width: int) -> None:
        self.container = av.open(io.BytesIO(), "w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        stream: Any = self.container.add_stream(CODEC, rate=rate, options=x264_options(cfg))
        stream.width, stream.height, stream.pix_fmt = width, height, PIX_FMT
        self.stream = stream
        self.pts = 0

    def add(self, planes: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(planes, format=PIX_FMT)
        frame.pts = self.pts
        self.pts += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _cpu(fn: Callable[..., object], *args: object) -> float:
    t = time.process_time()
    fn(*args)
    return time.process_time() - t


def _feed(stream: _X264, planes: list[np.ndarray]) -> None:
    for p in planes:
        stream.add(p)


def _per_take(cfg: MediaConfig, fps: float, h: int, w: int, planes: list[np.ndarray]) -> None:
    enc = _X264(cfg, fps, h, w)
    _feed(enc, planes)
    enc.close()


def bench(takes: pd.DataFrame, raw: Path, cfg: MediaConfig, tmp: Path) -> dict[str, float]:
    """CPU seconds per row over all the takes (interleaved take by take)."""
    secs = dict.fromkeys(("stage", "encode", "floor: x264", "x264 per take"), 0.0)
    one: _X264 | None = None
    row: Any  # a manifest row
    for row in takes.itertuples(index=False):
        src = raw / row.path
        fps = _take_fps(row)
        job = {
            "take_id": row.take_id,
            "src": str(src),
            "tmp": str(tmp / "stage.mp4"),
            "expected_frames": int(row.n_frames),
            "fps": fps,
            "key": "bench",
            "cfg": cfg,
        }
        secs["stage"] += _cpu(make_proxy, job)
        frames = list(iter_frames(src))
        secs["encode"] += _cpu(encode_proxy, iter(frames), tmp / "encode.mp4", fps, cfg)
        planes = _yuv(frames, cfg)
        h, w = planes[0].shape[0] * 2 // 3, planes[0].shape[1]
        if one is None:
            one = _X264(cfg, fps, h, w)
        secs["floor: x264"] += _cpu(_feed, one, planes)
        secs["x264 per take"] += _cpu(_per_take, cfg, fps, h, w, planes)
    if one is not None:
        secs["floor: x264"] += _cpu(one.close)
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takes", type=int, default=40, help="accepted takes, spread over the manifest (default 40)")
    ap.add_argument("--presets", nargs="*", default=["medium"], help="other x264 presets to compare (default medium)")
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    cv2.setNumThreads(1)
    layout = Layout.discover()
    p = load_params(layout.params_file)
    manifest = pd.read_parquet(layout.manifest)
    acc = manifest[manifest["status"] == "accepted"].sort_values("take_id")
    takes = acc.iloc[:: max(1, len(acc) // args.takes)].head(args.takes)
    raw = layout.resolve(p.ingest.raw_dir)
    base = media_config(p.media)
    n_frames = int(takes["n_frames"].sum())
    first = next(iter_frames(raw / takes.iloc[0]["path"]))
    w, h = target_size(first.shape[1], first.shape[0], base.min_height)
    print(
        f"{len(takes)} takes, {n_frames} frames of {first.shape[1]}x{first.shape[0]} encoded at {w}x{h}, crf "
        f"{base.crf}, keyframe every {base.keyframe_every}; one core, CPU seconds, interleaved take by take\n"
        "floor: x264 = the same frames, converted beforehand and held in memory, encoded into ONE libx264 "
        "stream in this process with the stage's options (no start-up per take, no decoding, no conversion)"
    )
    print(f"{'preset':<10} {'row':<15} {'frames/s':>9} {'takes/s':>8} {'x floor':>8}")
    presets = [base.preset] + [x for x in args.presets if x != base.preset]
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            secs = bench(takes, raw, replace(base, preset=preset), Path(tmp))
            floor = secs["floor: x264"]
            for row, s in secs.items():
                label = f"{preset}{' (params)' if preset == base.preset else ''}"
                print(f"{label:<10} {row:<15} {n_frames / s:9.1f} {len(takes) / s:8.2f} {s / floor:8.2f}")


if __name__ == "__main__":
    main()
