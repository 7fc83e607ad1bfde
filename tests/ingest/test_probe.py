"""Probing one take: damage inside a video stream, and the checks on frame-folder takes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.errors import EnvironmentFault
from pipeline.ingest.probe import FRAMES_CONTAINER, numbering_problem, probe_frames, probe_take, probe_video


def _video(path: Path, n: int = 20, size: int = 96) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size, size))
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        cv2.circle(img, (48, 48), 10 + i, (0, 0, 255), -1)
        w.write(img)
    w.release()
    return path


def _frames(folder: Path, names: list[str], size: int = 32) -> Path:
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        ok, buf = cv2.imencode(Path(name).suffix, np.full((size, size, 3), 20 * i % 255, np.uint8))
        (folder / name).write_bytes(buf.tobytes())
    return folder


def test_a_clean_video_probes_clean(tmp_path: Path) -> None:
    r = probe_video(_video(tmp_path / "v.mp4"))
    assert r.error_code is None, r.error
    assert (r.n_frames, r.width, r.height, r.fps, r.damaged_frames) == (20, 96, 96, 10.0, 0)


def test_flipped_bytes_inside_the_stream_are_corrupt(tmp_path: Path) -> None:
    data = bytearray(_video(tmp_path / "v.mp4").read_bytes())
    start = data.index(b"mdat") + 64
    for k in range(start, len(data) - 4096, 997):  # the container's index (moov) at the end stays intact
        data[k] ^= 0x5A
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    r = probe_video(bad)
    assert r.error_code == "corrupt", r
    assert r.damaged_frames and r.damaged_frames > 0
    assert "damaged stream" in r.error


def test_an_unreadable_file_is_reported_not_raised(tmp_path: Path) -> None:
    def deny(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    r = probe_video(_video(tmp_path / "v.mp4"), hasher=deny)
    assert r.error_code == "unreadable" and "Permission denied" in r.error


def test_a_fault_of_the_machine_is_raised_not_blamed_on_the_file(tmp_path: Path) -> None:
    def no_memory(path: Path) -> str:
        raise OSError(12, "Cannot allocate memory", str(path))

    with pytest.raises(EnvironmentFault, match="Cannot allocate memory"):
        probe_video(_video(tmp_path / "v.mp4"), hasher=no_memory)


def test_a_good_frame_folder(tmp_path: Path) -> None:
    folder = _frames(tmp_path / "t", [f"img{i}.jpeg" for i in range(1, 11)])
    r = probe_take(folder)
    assert r.container == FRAMES_CONTAINER and r.error_code is None, r.error
    assert (r.n_frames, r.width, r.height, r.fps) == (10, 32, 32, None)
    assert r.size_bytes == sum(p.stat().st_size for p in folder.iterdir())


def test_a_jpeg_cut_short_is_corrupt(tmp_path: Path) -> None:
    folder = _frames(tmp_path / "t", [f"{i:03d}.jpg" for i in range(5)])
    f = folder / "002.jpg"
    f.write_bytes(f.read_bytes()[:-30])  # libjpeg would still decode most of it
    r = probe_frames(folder)
    assert r.error_code == "corrupt" and "002.jpg" in r.error


@pytest.mark.parametrize(
    "names,code",
    [
        (["1.png", "2.png", "3.png"], None),
        (["0.png", "1.png", "5.png", "6.png"], "frame_gap"),
        (["1.png", "01.jpg", "2.png"], "frame_numbering"),
        (["1.png", "cover.png"], "frame_numbering"),
        (["S005_001_00000011.png", "S005_001_00000012.png"], None),  # CK+: the last number counts
    ],
)
def test_numbering(names: list[str], code: str | None) -> None:
    problem = numbering_problem([Path(n) for n in names])
    assert (problem[0] if problem else None) == code
