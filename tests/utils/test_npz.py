"""write_npz: same arrays give the same bytes, the file verifies itself, damage anywhere is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.utils import io


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "key": np.array("k" * 32),
        "frames": rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8),
        "points": rng.normal(size=(4, 5, 2)).astype(np.float32),
        "valid": np.array([1, 0, 1, 1], bool),
    }


def test_same_arrays_same_bytes_and_loadable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "sub" / "b.npz"
    ha = io.write_npz(a, _arrays())
    hb = io.write_npz(b, _arrays(), tmp_dir=tmp_path / "tmp")
    assert ha == hb and a.read_bytes() == b.read_bytes()
    assert io.npz_sha256(a) == ha and io.npz_problem(a) is None
    with np.load(a) as z:
        assert z.files == ["key", "frames", "points", "valid"] and str(z["key"]) == "k" * 32
        np.testing.assert_array_equal(z["frames"], _arrays()["frames"])
    assert not list((tmp_path / "tmp").iterdir()) and sorted(p.name for p in b.parent.iterdir()) == ["b.npz"]


def test_streamed_member_gives_the_same_bytes(tmp_path: Path) -> None:
    arrays = _arrays()
    raw = tmp_path / "frames.raw"
    raw.write_bytes(arrays["frames"].tobytes())
    streamed = dict(arrays, frames=io.RawArray(raw, np.dtype(np.uint8), arrays["frames"].shape))
    assert io.write_npz(tmp_path / "s.npz", streamed) == io.write_npz(tmp_path / "m.npz", arrays)


def test_zip_metadata_is_fixed(tmp_path: Path) -> None:
    import zipfile

    io.write_npz(tmp_path / "a.npz", _arrays())
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {io.NPZ_DATE_TIME}
        assert {i.external_attr >> 16 for i in zf.infolist()} == {0o644}


@pytest.mark.parametrize("where", [0, 40, 0.3, 0.6, 0.9, -80, -30, -1])
def test_any_flipped_byte_is_caught(tmp_path: Path, where: float) -> None:
    p = tmp_path / "a.npz"
    io.write_npz(p, _arrays())
    data = bytearray(p.read_bytes())
    i = int(where * len(data)) if isinstance(where, float) else where
    data[i] ^= 0x10
    p.write_bytes(bytes(data))
    assert io.npz_problem(p) is not None


def test_truncated_empty_and_foreign_files_are_caught(tmp_path: Path) -> None:
    p = tmp_path / "a.npz"
    io.write_npz(p, _arrays())
    p.write_bytes(p.read_bytes()[:-100])
    assert "no sha256" in io.npz_problem(p)
    p.write_bytes(b"")
    assert io.npz_problem(p) is not None
    np.savez_compressed(p, **_arrays())
    assert io.npz_problem(p) is not None
    assert io.npz_problem(tmp_path / "missing.npz") is not None
