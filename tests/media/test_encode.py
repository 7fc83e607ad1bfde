"""Proxies: H.264/yuv420p/even/faststart/CFR, frame k of the proxy is frame k of the take, same bytes twice."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.media.encode import (
    MediaConfig,
    ProxyError,
    decode_frames,
    encode_proxy,
    fit_frame,
    fps_fraction,
    playable_problems,
    probe_video,
    target_size,
)
from pipeline.params import Params
from pipeline.utils.frames import iter_frames

CFG = MediaConfig(crf=18, preset="medium", keyframe_every=10, min_height=320, passthrough_playable=False)


def distinct_frames(n: int, w: int = 96, h: int = 80) -> list[np.ndarray]:
    """BGR frames that differ strongly from each other: a bright block whose position and colour encode k."""
    frames = []
    for k in range(n):
        img = np.full((h, w, 3), 40, np.uint8)
        img[:, :, 1] = np.linspace(20, 200, w, dtype=np.uint8)[None, :]  # a smooth background
        x = (k * 11) % (w - 24)
        y = (k * 7) % (h - 24)
        img[y : y + 24, x : x + 24] = (255 - 9 * k, 60 + 8 * k, 230)
        frames.append(img)
    return frames


def write_mp4v(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """A take as the simulator and many rigs write it: MPEG-4 Part 2, which browsers cannot play."""
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        out.write(f)
    out.release()
    return path


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize(
    ("w", "h", "min_h", "want"),
    [
        (96, 96, 320, (320, 320)),  # upscaled, square kept
        (160, 90, 320, (568, 320)),  # aspect kept, width rounded to even
        (641, 481, 320, (642, 482)),  # already tall enough: only made even
        (640, 480, 0, (640, 480)),
    ],
)
def test_target_size_is_even_and_at_least_min_height(w: int, h: int, min_h: int, want: tuple[int, int]) -> None:
    assert target_size(w, h, min_h) == want


def test_fit_frame_pads_odd_frames_without_resampling() -> None:
    bgr = np.random.default_rng(0).integers(0, 255, (81, 99, 3), dtype=np.uint8)
    rgb = fit_frame(bgr, (100, 82))
    assert rgb.shape == (82, 100, 3)
    np.testing.assert_array_equal(rgb[:81, :99], bgr[:, :, ::-1])  # the take's pixels, untouched


@pytest.mark.parametrize(
    ("fps", "want"), [(10.0, Fraction(10)), (30000 / 1001, Fraction(30000, 1001)), (25, Fraction(25))]
)
def test_fps_fraction_is_the_exact_rational(fps: float, want: Fraction) -> None:
    assert fps_fraction(fps) == want


def test_fps_fraction_refuses_nonsense() -> None:
    with pytest.raises(ProxyError):
        fps_fraction(float("nan"))


def test_proxy_frames_are_the_take_frames_in_order(tmp_path: Path) -> None:
    take = write_mp4v(tmp_path / "take.mp4", distinct_frames(16))
    src = list(iter_frames(take))
    n, w, h = encode_proxy(iter(src), tmp_path / "proxy.mp4", 10.0, CFG)
    assert (n, w, h) == (16, 384, 320)
    out = decode_frames(tmp_path / "proxy.mp4")
    assert len(out) == len(src) == 16
    back = [cv2.resize(f, (96, 80), interpolation=cv2.INTER_AREA) for f in out]
    diffs = np.array([[mad(p, s) for s in src] for p in back])
    assert diffs.diagonal().max() < 3.0  # frame k looks like take frame k
    assert (diffs.argmin(axis=1) == np.arange(16)).all()  # and like no other frame: order kept
    off_diagonal = diffs[~np.eye(16, dtype=bool)]
    assert off_diagonal.min() > 3 * diffs.diagonal().max()


def test_proxy_is_what_a_browser_plays(tmp_path: Path) -> None:
    frames = distinct_frames(12, w=97, h=71)  # odd size, small: upscaled and made even
    encode_proxy(iter(frames), tmp_path / "p.mp4", 30000 / 1001, CFG)
    info = probe_video(tmp_path / "p.mp4")
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.moov_first
    assert info.height == 320 and info.width % 2 == 0 and info.n_frames == 12
    assert info.constant_rate and info.first_pts_zero
    assert playable_problems(info, 12, 320) == []
    with av.open(str(tmp_path / "p.mp4")) as c:
        s = c.streams.video[0]
        assert s.average_rate == Fraction(30000, 1001)
        assert c.duration / av.time_base == pytest.approx(12 * 1001 / 30000, abs=1e-3)  # n_frames / fps
        assert "creation_time" not in c.metadata and "creation_time" not in s.metadata


def test_same_take_same_bytes(tmp_path: Path) -> None:
    frames = distinct_frames(10)
    encode_proxy(iter(frames), tmp_path / "a.mp4", 10.0, CFG)
    encode_proxy(iter(frames), tmp_path / "b.mp4", 10.0, CFG)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    encode_proxy(iter(frames), tmp_path / "c.mp4", 10.0, MediaConfig(**{**CFG.__dict__, "crf": 30}))
    assert (tmp_path / "c.mp4").read_bytes() != (tmp_path / "a.mp4").read_bytes()


def test_an_mp4v_take_is_not_playable_as_it_is(tmp_path: Path) -> None:
    take = write_mp4v(tmp_path / "take.mp4", distinct_frames(8, w=96, h=96))
    problems = playable_problems(probe_video(take), 8, 320)
    assert any("not H.264" in p for p in problems) and any("min_height" in p for p in problems)


def test_a_frame_of_another_size_is_an_error(tmp_path: Path) -> None:
    frames = distinct_frames(3) + [np.zeros((50, 50, 3), np.uint8)]
    with pytest.raises(ProxyError, match="frame 3"):
        encode_proxy(iter(frames), tmp_path / "p.mp4", 10.0, CFG)


def test_undecodable_video_is_a_proxy_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0\0\0\x18ftypisom" + b"garbage" * 50)
    with pytest.raises(ProxyError, match="bad.mp4"):
        probe_video(bad)


def test_default_preset_proxy_keeps_the_contract(tmp_path: Path, params: Params) -> None:
    """The in-process encoder at the parameters' preset: H.264 yuv420p, faststart, CFR from 0, min height,
    a keyframe at least every `keyframe_every` frames, the take's frame count, and every frame decodable
    by seeking to its own timestamp (frame-exact stepping in the annotation player)."""
    m = params.media
    cfg = MediaConfig(m.crf, m.preset, m.keyframe_every, m.min_height, m.passthrough_playable)
    take = write_mp4v(tmp_path / "take.mp4", distinct_frames(23, w=97, h=71))
    src = list(iter_frames(take))
    proxy = tmp_path / "p.mp4"
    assert encode_proxy(iter(src), proxy, 10.0, cfg)[0] == 23
    info = probe_video(proxy)
    assert playable_problems(info, 23, m.min_height) == []
    assert (info.codec, info.pix_fmt, info.n_frames) == ("h264", "yuv420p", 23) and info.height >= m.min_height
    with av.open(str(proxy)) as c:
        keys = [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size]
    at = [i for i, k in enumerate(keys) if k]
    assert len(keys) == 23 and at[0] == 0 and max(np.diff([*at, 23])) <= m.keyframe_every
    frames = decode_frames(proxy)
    back = [cv2.resize(f, src[0].shape[1::-1], interpolation=cv2.INTER_AREA) for f in frames]
    assert max(mad(p, s) for p, s in zip(back, src)) < 3.0
    with av.open(str(proxy)) as c:
        s = c.streams.video[0]
        step = Fraction(1, 10) / s.time_base  # one frame in the stream's time base
        assert step.denominator == 1
        for k in (22, 0, 13, 9, 10, 1):  # out of order: each a fresh seek
            c.seek(int(k * step), stream=s, backward=True, any_frame=False)
            frame = next(f for f in c.decode(s) if f.pts is not None and f.pts >= k * step)
            assert frame.pts == k * step
            assert np.array_equal(frame.to_ndarray(format="bgr24"), frames[k])


def test_one_converter_per_take_gives_the_pixels_of_one_per_frame() -> None:
    """The encoder keeps one scaler for a take's frames: the same YUV as a fresh conversion per frame."""
    from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

    one = VideoReformatter()
    opts = {"format": "yuv420p", "dst_colorspace": Colorspace.ITU601, "dst_color_range": ColorRange.MPEG}
    for bgr in distinct_frames(5, w=320, h=320):
        frame = av.VideoFrame.from_ndarray(fit_frame(bgr, (320, 320)), format="rgb24")
        assert np.array_equal(one.reformat(frame, **opts).to_ndarray(), frame.reformat(**opts).to_ndarray())
