"""`release verify` reads every member, rejects what a release must not hold, never tracebacks."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.release import build
from pipeline.release.verify import verify, verify_command
from pipeline.utils import io as io_


def _release_dir(tmp_path: Path, name: str = "ds-1.0.0") -> Path:
    d = tmp_path / name
    (d / "aligned").mkdir(parents=True)
    (d / "metadata").mkdir()
    rng = np.random.default_rng(0)
    for t in ("x", "y"):
        np.savez(d / "aligned" / f"{t}.npz", frames=rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8))
    pd.DataFrame({"take_id": ["x", "y"], "aligned_file": ["aligned/x.npz", "aligned/y.npz"]}).to_csv(
        d / "metadata" / "takes.csv", index=False
    )
    (d / "README.md").write_text("hello\n")
    build.write_sums(d)
    return d


def _flip_inside_array(p: Path) -> None:
    """Flip one byte of the array data (not the zip headers): the file still opens, its CRC fails."""
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0xFF
    p.write_bytes(bytes(b))


def test_a_flipped_byte_inside_an_npz_is_caught_even_with_matching_checksums(tmp_path: Path) -> None:
    d = _release_dir(tmp_path)
    _flip_inside_array(d / "aligned" / "x.npz")
    build.write_sums(d)  # the old build computed SHA256SUMS over the damaged bytes and verify said OK
    res = verify(d)
    assert not res["ok"] and res["altered"] == []
    assert len(res["problems"]) == 1 and res["problems"][0].startswith("aligned/x.npz: does not load")
    build.deterministic_tar(d, tmp_path / "r.tar.gz", 0)
    assert verify(tmp_path / "r.tar.gz")["problems"][0].startswith("aligned/x.npz: does not load")


def test_the_build_refuses_an_aligned_file_that_does_not_load(tmp_path: Path) -> None:
    d = _release_dir(tmp_path)
    for t in ("x", "y"):  # as align writes them: recording their own sha256
        io_.write_npz(d / "aligned" / f"{t}.npz", dict(np.load(d / "aligned" / f"{t}.npz")))
    _flip_inside_array(d / "aligned" / "y.npz")
    build.check_loadable([d / "aligned" / "x.npz"])
    with pytest.raises(build.ReleaseError, match=r"1 aligned file\(s\) damaged or not loadable.*y\.npz: "):
        build.check_loadable([d / "aligned" / "x.npz", d / "aligned" / "y.npz"])


def test_the_build_refuses_an_aligned_file_that_loads_but_no_longer_matches_its_recorded_sha256(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    io_.write_npz(a, {"frames": np.zeros((2, 4, 4, 3), np.uint8)})
    io_.write_npz(b, {"frames": np.ones((2, 4, 4, 3), np.uint8)})
    swapped = b.read_bytes()[:-64] + a.read_bytes()[-64:]  # b's content under a's recorded digest
    a.write_bytes(swapped)
    assert build.load_problem(a) is None  # it loads: the old check shipped it
    with pytest.raises(build.ReleaseError, match=r"a\.npz: sha256 .* differs from the recorded"):
        build.check_loadable([a])
    with pytest.raises(build.ReleaseError, match=r"a\.npz: no sha256 recorded"):
        np.savez(a, frames=np.zeros(3))  # not written by write_npz (or truncated): nothing to check it against
        build.check_loadable([a])


def _tar_with(tmp_path: Path, d: Path, extra: list[tarfile.TarInfo], rename: dict[str, str] | None = None) -> Path:
    """The release's archive with members renamed and extra (link, device) members appended."""
    good = tmp_path / "good.tar.gz"
    build.deterministic_tar(d, good, 0)
    out = tmp_path / "bad.tar.gz"
    with tarfile.open(good) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            m.name = (rename or {}).get(m.name, m.name)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
        for m in extra:
            dst.addfile(m)
    return out


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, target
    return m


@pytest.mark.parametrize(
    "extra,rename,reason",
    [
        ([_link("ds-1.0.0/aligned/z.npz", "/etc/passwd", tarfile.SYMTYPE)], None, "is a link"),
        ([_link("ds-1.0.0/aligned/z.npz", "ds-1.0.0/aligned/x.npz", tarfile.LNKTYPE)], None, "is a link"),
        ([_link("ds-1.0.0/dev0", "", tarfile.CHRTYPE)], None, "device, fifo or other special member"),
        ([_link("ds-1.0.0/fifo", "", tarfile.FIFOTYPE)], None, "device, fifo or other special member"),
        ([], {"ds-1.0.0/README.md": "other/README.md"}, "outside the release's one top folder"),
        ([], {"ds-1.0.0/README.md": "ds-1.0.0/../README.md"}, "unsafe"),
    ],
)
def test_verify_rejects_links_devices_and_members_outside_the_top_folder(
    tmp_path: Path, extra, rename, reason: str
) -> None:
    archive = _tar_with(tmp_path, _release_dir(tmp_path), extra, rename)
    res = verify(archive)
    assert not res["ok"] and any(reason in p for p in res["problems"]), res


def test_verify_rejects_a_link_in_a_release_folder(tmp_path: Path) -> None:
    d = _release_dir(tmp_path)
    (d / "aligned" / "z.npz").symlink_to(d / "aligned" / "x.npz")
    res = verify(d)
    assert not res["ok"] and res["problems"] == ["aligned/z.npz: is a link (a release holds only regular files)"]


@pytest.mark.parametrize(
    "line,reason",
    [
        ("not a checksum line", "line 5: not '<64 lowercase hex>  <relative path>'"),
        ("0" * 64 + "  /etc/passwd", "line 5: unsafe path"),
        ("0" * 64 + "  ../README.md", "line 5: unsafe path"),
    ],
)
def test_verify_rejects_bad_sums_lines(tmp_path: Path, line: str, reason: str) -> None:
    d = _release_dir(tmp_path)
    with open(d / build.SUMS, "a") as f:
        f.write(line + "\n")
    res = verify(d)
    assert not res["ok"] and any(reason in p for p in res["problems"]), res


@pytest.mark.parametrize("damage", ["truncate", "flip_gzip", "not_gzip", "empty"])
def test_damaged_archives_get_a_one_line_reason_not_a_traceback(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    d = _release_dir(tmp_path)
    a = tmp_path / "r.tar.gz"
    build.deterministic_tar(d, a, 0)
    b = bytearray(a.read_bytes())
    if damage == "truncate":
        b = b[: len(b) // 2]
    elif damage == "flip_gzip":
        b[len(b) // 2] ^= 0x55
    elif damage == "not_gzip":
        b = bytearray(b"hello, this is no archive")
    else:
        b = bytearray()
    a.write_bytes(bytes(b))
    res = verify(a)
    assert not res["ok"] and len(res["problems"]) == 1 and "\n" not in res["problems"][0]
    assert verify_command(a) == 1
    assert capsys.readouterr().out == f"{a}: FAILED (0 files checked)\n" and "Traceback" not in caplog.text


def test_an_intact_gzip_stream_with_damaged_tar_headers_is_reported(tmp_path: Path) -> None:
    d = _release_dir(tmp_path)
    a = tmp_path / "r.tar.gz"
    build.deterministic_tar(d, a, 0)
    raw = bytearray(gzip.decompress(a.read_bytes()))
    raw[148:156] = b"99999999"  # the first header's checksum field
    a.write_bytes(gzip.compress(bytes(raw)))
    res = verify(a)
    assert not res["ok"] and res["problems"]


def test_the_verify_command_says_ok_in_one_line(tmp_path: Path, capsys) -> None:
    d = _release_dir(tmp_path)
    assert verify_command(d) == 0
    assert capsys.readouterr().out == f"{d}: OK (4 files checked)\n"
