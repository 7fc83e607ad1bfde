"""The shared take reader: ordering by the number in the name, both take kinds, a stable sha256."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.utils.frames import (
    FrameReadError,
    frame_number,
    is_frame_folder,
    iter_frames,
    list_frame_files,
    take_sha256,
)


def _frames(folder: Path, names: list[str], size: int = 16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img = np.full((size, size, 3), (10 * i, 0, 200), np.uint8)
        ok, buf = cv2.imencode(Path(name).suffix, img)
        (folder / name).write_bytes(buf.tobytes())


def test_frames_are_ordered_by_the_number_not_the_text(tmp_path: Path) -> None:
    _frames(tmp_path / "t", ["f10.png", "f9.png", "f100.png", "S005_001_00000002.png", "notes.png"])
    (tmp_path / "t" / "readme.txt").write_text("x")
    (tmp_path / "t" / "._f1.png").write_bytes(b"junk")
    names = [p.name for p in list_frame_files(tmp_path / "t")]
    assert names == ["S005_001_00000002.png", "f9.png", "f10.png", "f100.png", "notes.png"]
    assert frame_number(Path("S005_001_00000011.png")) == 11


def test_frame_folder_reads_bgr_frames_in_order(tmp_path: Path) -> None:
    _frames(tmp_path / "t", ["2.png", "1.png", "3.jpg"])
    assert is_frame_folder(tmp_path / "t")
    frames = list(iter_frames(tmp_path / "t"))
    assert [f.shape for f in frames] == [(16, 16, 3)] * 3
    assert frames[0].dtype == np.uint8
    assert frames[0][0, 0, 0] == 10 and frames[1][0, 0, 0] == 0  # "1.png" (written second) comes first
    assert frames[0][0, 0, 2] == 200  # BGR: red channel last


def test_video_file_reads_frames(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
    for i in range(5):
        w.write(np.full((32, 32, 3), 40 * i, np.uint8))
    w.release()
    assert not is_frame_folder(path)
    frames = list(iter_frames(path))
    assert len(frames) == 5 and frames[0].shape == (32, 32, 3)


def test_undecodable_frame_names_its_file(tmp_path: Path) -> None:
    _frames(tmp_path / "t", ["1.png"])
    (tmp_path / "t" / "2.png").write_bytes(b"not a png")
    with pytest.raises(FrameReadError, match="2.png"):
        list(iter_frames(tmp_path / "t"))


def test_folder_sha256_covers_names_order_and_bytes(tmp_path: Path) -> None:
    _frames(tmp_path / "t", ["1.png", "2.png"])
    first = take_sha256(tmp_path / "t")
    (tmp_path / "t" / "notes.txt").write_text("not a frame")
    assert take_sha256(tmp_path / "t") == first  # only frames count
    (tmp_path / "t" / "2.png").rename(tmp_path / "t" / "3.png")
    assert take_sha256(tmp_path / "t") != first
    f = tmp_path / "v.bin"
    f.write_bytes(b"abc")
    assert take_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_empty_or_linked_folder_is_not_a_frame_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _frames(tmp_path / "t", ["1.png"])
    (tmp_path / "link").symlink_to(tmp_path / "t")
    assert not is_frame_folder(tmp_path / "empty")
    assert not is_frame_folder(tmp_path / "link")
    assert not is_frame_folder(tmp_path / "missing")
