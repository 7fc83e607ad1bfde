"""Ingest against a corpus of bad inputs the test builds itself: each ends quarantined with its own
reason, and every file and every log row is accounted for.

Tests run as root, which reads any file whatever its mode: an unreadable file and an unlistable folder
are simulated by handing ingest a lister and a probe that fail with PermissionError (as the real calls
would for a normal user). The probe runs in spawned workers: it is a module-level function here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.errors import EnvironmentFault
from pipeline.ingest import discover as discover_mod
from pipeline.ingest.probe import ProbeResult, probe_take, probe_video
from pipeline.ingest.run import ingest
from pipeline.ingest.stage import run as ingest_stage
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.stage import invoke
from pipeline.utils import io
from pipeline.utils.frames import iter_frames

# take_id (or path, for files without a log row) -> the reason code it must carry
EXPECTED: dict[str, str] = {
    "pf00000-cam_c": "truncated",
    "pf00000-cam_r30": "empty_file",
    "pf00001-cam_c": "not_a_video",
    "pf00001-cam_r30": "fps_mismatch",
    "pf00002-cam_r30": "bad_value",  # illumination 'sunset'
    "pf00003-cam_c": "non_portable_name",  # renamed to a non-ASCII file name
    "pf00003-cam_r30": "path_escape",  # file = ../outside.mp4
    "pf00004-cam_c": "unknown_subject",
    "pf00005-cam_c": "consent_withdrawn",
    "pf09999-cam_c": "duplicate_content",  # a second log row for a byte copy of pf00002-cam_c
    "pf08888-cam_c": "missing_file",  # a log row whose file does not exist
    "pf07777-cam_c": "out_of_bounds",  # a real video at 2 fps, below the fps bound
    "takes/stray.mp4": "orphan_file",  # a file with no log row
    "takes/pf00003-cam_r30.mp4": "orphan_file",  # its row now points elsewhere
    "takes/link.mp4": "path_escape",  # symlink leading out of the raw folder
    "pf06666-cam_c": "corrupt",  # bytes flipped inside the video data (the decoder would conceal them)
    "pf00007-cam_r30": "checksum_mismatch",  # the log's sha256 column disagrees with the bytes
    "pf05001-cam_c": "frame_gap",  # frame folder with frame 4 missing
    "pf05002-cam_c": "frame_numbering",  # frame folder with frame number 3 twice
    "pf05003-cam_c": "mixed_frame_sizes",  # frame folder with one frame of another size
    "pf05004-cam_c": "corrupt",  # frame folder with one PNG cut short
    "takes/pipe.mp4": "special_file",  # a FIFO: opening it would block forever
    "takes/loop.mp4": "link_loop",  # a symlink to itself
    "takes/dangling.mp4": "dangling_link",  # a symlink to nothing
    "takes/linkdir": "linked_folder",  # a symlink to a folder of two files
    "takes/bad\\xff.mp4": "undecodable_name",  # a file name that is not UTF-8
    "takes/emptydir": "empty_folder",
    "takes/locked": "unreadable",  # a folder that cannot be listed (simulated)
    "takes/secret.mp4": "unreadable",  # a file that cannot be read (simulated)
    "pf04444-cam_c": "special_file",  # the log names a FIFO outside takes/
    "pf04445-cam_c": "not_a_take",  # the log names a folder without frames
}
UNTOUCHED = ["pf00002-cam_c", "pf00004-cam_r30", "pf00005-cam_r30", "pf00006-cam_c", "pf00006-cam_r30", "pf00007-cam_c"]
# a frame folder, a link to one inside the raw folder, and one outside takes/ named by the log
FRAME_TAKES_OK = ["pf05000-cam_c", "pf05005-cam_c", "pf05006-cam_c"]


def _write_video(path: Path, fps: float, n: int = 8, size: int = 96) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for i in range(n):
        w.write(np.full((size, size, 3), 30 * i % 255, np.uint8))
    w.release()


def build_corpus(raw: Path) -> None:
    """Damage a copy of a good capture in every way the rig (or a person) might."""
    takes = raw / "takes"
    log = pd.read_csv(raw / "capture_log.csv", dtype=str, keep_default_na=False)
    row = {t: i for i, t in enumerate(log["take_id"])}

    data = (takes / "pf00000-cam_c.mp4").read_bytes()
    (takes / "pf00000-cam_c.mp4").write_bytes(data[: len(data) // 2])
    (takes / "pf00000-cam_r30.mp4").write_bytes(b"")
    (takes / "pf00001-cam_c.mp4").write_text("this is a note, not a video\n" * 40)
    log.loc[row["pf00001-cam_r30"], "fps"] = "25"
    log.loc[row["pf00002-cam_r30"], "illumination"] = "sunset"
    (takes / "pf00003-cam_c.mp4").rename(takes / "pf00003-cäm_c.mp4")
    log.loc[row["pf00003-cam_c"], "file"] = "takes/pf00003-cäm_c.mp4"
    (raw.parent / "outside.mp4").write_bytes((takes / "pf00006-cam_c.mp4").read_bytes())
    log.loc[row["pf00003-cam_r30"], "file"] = "../outside.mp4"
    log.loc[row["pf00004-cam_c"], "subject_id"] = "sub-nobody"
    log.loc[row["pf00005-cam_c"], "subject_id"] = "sub-gone"
    subjects = pd.read_csv(raw / "subjects.csv", dtype=str, keep_default_na=False)
    gone = {
        "subject_id": "sub-gone",
        "consent_research": "true",
        "consent_public_release": "true",
        "withdrawn": "true",
        "consent_date": "2026-02-23",
        "withdrawn_date": "2026-05-01",
    }
    pd.concat([subjects, pd.DataFrame([gone])]).to_csv(raw / "subjects.csv", index=False)

    shutil.copy(takes / "pf00002-cam_c.mp4", takes / "pf09999-cam_c.mp4")
    extra = []
    dup = log.loc[row["pf00002-cam_c"]].copy()
    dup["take_id"], dup["file"], dup["recorded_at"] = (
        "pf09999-cam_c",
        "takes/pf09999-cam_c.mp4",
        "2026-12-01T10:00:00+00:00",
    )
    extra.append(dup)
    orphan_row = log.loc[row["pf00006-cam_c"]].copy()
    orphan_row["take_id"], orphan_row["file"] = "pf08888-cam_c", "takes/pf08888-cam_c.mp4"
    extra.append(orphan_row)
    _write_video(takes / "pf07777-cam_c.mp4", fps=2.0)
    slow = log.loc[row["pf00006-cam_c"]].copy()
    slow["take_id"], slow["file"], slow["fps"] = "pf07777-cam_c", "takes/pf07777-cam_c.mp4", "2"
    extra.append(slow)
    log = pd.concat([log, pd.DataFrame(extra)], ignore_index=True)
    log.to_csv(raw / "capture_log.csv", index=False)

    shutil.copy(takes / "pf00006-cam_r30.mp4", takes / "stray.mp4")
    (takes / "link.mp4").symlink_to(raw.parent / "outside.mp4")
    _add_stream_damage_and_checksums(raw)
    _add_frame_folders(raw)
    _add_odd_entries(raw)


def _flip_bytes(data: bytes, start: int, n: int = 16) -> bytes:
    out = bytearray(data)
    rng = np.random.default_rng(0)
    for k in rng.integers(start, len(out) - 64, n):
        out[k] ^= 0xFF
    return bytes(out)


def _add_stream_damage_and_checksums(raw: Path) -> None:
    takes = raw / "takes"
    data = (takes / "pf00006-cam_c.mp4").read_bytes()
    (takes / "pf06666-cam_c.mp4").write_bytes(_flip_bytes(data, data.index(b"mdat") + 64))
    log = pd.read_csv(raw / "capture_log.csv", dtype=str, keep_default_na=False)
    base = log[log["take_id"] == "pf00006-cam_c"].iloc[0].copy()
    rows = []
    for take_id, file in (
        [("pf06666-cam_c", "takes/pf06666-cam_c.mp4")]
        + [(f"pf0500{i}-cam_c", f"takes/pf0500{i}-cam_c") for i in range(6)]
        + [("pf05006-cam_c", "frames/pf05006"), ("pf04444-cam_c", "fifo.mp4"), ("pf04445-cam_c", "notes")]
    ):
        r = base.copy()
        r["take_id"], r["file"] = take_id, file
        rows.append(r)
    log = pd.concat([log, pd.DataFrame(rows)], ignore_index=True)
    log["sha256"] = ""
    good = hashlib.sha256((takes / "pf00007-cam_c.mp4").read_bytes()).hexdigest()
    log.loc[log["take_id"] == "pf00007-cam_c", "sha256"] = good.upper()  # case does not matter
    log.loc[log["take_id"] == "pf00007-cam_r30", "sha256"] = "0" * 64
    log.to_csv(raw / "capture_log.csv", index=False)


def _write_frames(folder: Path, names: list[str], frames: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for name, img in zip(names, frames):
        ok, buf = cv2.imencode(Path(name).suffix, img)
        (folder / name).write_bytes(buf.tobytes())


def _add_frame_folders(raw: Path) -> None:
    takes = raw / "takes"
    frames = list(iter_frames(takes / "pf00006-cam_r30.mp4"))  # 8 frames, 96x96
    frames = frames + [frames[-1]]
    names = [f"frame_{i:03d}.png" for i in range(len(frames))]
    _write_frames(takes / "pf05000-cam_c", names, frames)
    _write_frames(takes / "pf05001-cam_c", names[:4] + [f"frame_{i:03d}.png" for i in range(5, 10)], frames)
    _write_frames(takes / "pf05002-cam_c", names[:-1] + ["frame_3.jpg"], frames)
    _write_frames(takes / "pf05003-cam_c", names, frames[:-1] + [cv2.resize(frames[-1], (64, 64))])
    _write_frames(takes / "pf05004-cam_c", names, frames)
    cut = takes / "pf05004-cam_c" / names[5]
    cut.write_bytes(cut.read_bytes()[:-40])
    _write_frames(raw / "store" / "pf05005", [f"{i}.jpg" for i in range(len(frames))], frames[::-1])
    (takes / "pf05005-cam_c").symlink_to(raw / "store" / "pf05005")
    _write_frames(raw / "frames" / "pf05006", [f"{i:02d}.png" for i in range(len(frames))], frames[1:] + frames[:1])


def _add_odd_entries(raw: Path) -> None:
    takes = raw / "takes"
    os.mkfifo(takes / "pipe.mp4")
    os.mkfifo(raw / "fifo.mp4")
    (raw / "notes").mkdir()
    (raw / "notes" / "readme.txt").write_text("not a take")
    (takes / "loop.mp4").symlink_to(takes / "loop.mp4")
    (takes / "dangling.mp4").symlink_to(takes / "nothing-here.mp4")
    (raw / "store" / "misc").mkdir(parents=True)
    (raw / "store" / "misc" / "a.txt").write_text("a")
    (raw / "store" / "misc" / "b.mp4").write_bytes(b"b")
    (takes / "linkdir").symlink_to(raw / "store" / "misc")
    with open(os.path.join(os.fsencode(takes), b"bad\xff.mp4"), "wb") as f:
        f.write((takes / "pf00006-cam_c.mp4").read_bytes())
    (takes / "emptydir").mkdir()
    (takes / "locked").mkdir()
    for i in range(3):
        (takes / "locked" / f"x{i}.mp4").write_bytes(b"x")
    shutil.copy(takes / "pf00006-cam_c.mp4", takes / "secret.mp4")


def _denying_lister(path: Path) -> list[os.DirEntry]:
    """Root lists everything: this lister refuses the folder `locked` as it would for a normal user."""
    if Path(path).name == "locked":
        raise PermissionError(13, "Permission denied", str(path))
    return discover_mod.list_dir(path)


def _denying_hasher(path: Path) -> str:
    raise PermissionError(13, "Permission denied", str(path))


def _denying_probe(path: Path) -> ProbeResult:
    """Root reads everything: hashing `secret.mp4` fails as it would for a normal user."""
    if path.name == "secret.mp4":
        return probe_video(path, hasher=_denying_hasher)
    return probe_take(path)


@pytest.fixture(scope="module")
def corpus(tiny_raw: Path, params: Params, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict, Path]:
    """Built and ingested once for the module (the tests only read it)."""
    raw = tmp_path_factory.mktemp("corpus") / "raw"
    shutil.copytree(tiny_raw, raw)
    build_corpus(raw)
    manifest, report = ingest(params, raw, probe=_denying_probe, lister=_denying_lister)
    return manifest, report, raw


WITHDRAWN = {"pf00005-cam_c"}  # counted in the manifest, but with no take id, path or subject (pipeline.consent)


def _entry(manifest: pd.DataFrame, key: str) -> pd.Series:
    if key in WITHDRAWN:
        hit = manifest[manifest["reason_code"] == "consent_withdrawn"]
        assert hit[["take_id", "path", "subject_id", "sha256"]].isna().all().all() and "sub-gone" not in hit.to_csv()
        return hit.iloc[0]
    hit = manifest[(manifest["take_id"] == key) | (manifest["take_id"].isna() & (manifest["path"] == key))]
    assert len(hit) == 1, f"{key}: expected exactly one manifest row, found {len(hit)}"
    return hit.iloc[0]


@pytest.mark.parametrize("key,code", sorted(EXPECTED.items()))
def test_each_bad_input_is_quarantined_with_its_reason(corpus, key: str, code: str) -> None:
    manifest, _, _ = corpus
    e = _entry(manifest, key)
    assert e["status"] == "quarantined"
    assert code in e["reason_codes"].split(","), e["reason"]
    assert e["reason"]


def test_good_takes_are_accepted_with_probed_metadata(corpus) -> None:
    manifest, _, raw = corpus
    for take in UNTOUCHED:
        e = _entry(manifest, take)
        assert e["status"] == "accepted", e["reason"]
        assert e["n_frames"] == 8 and e["width"] == 96 and e["height"] == 96
        assert e["duration_s"] == pytest.approx(0.8)
        assert len(e["sha256"]) == 64


def test_frame_folder_takes_are_accepted_with_the_logs_fps(corpus) -> None:
    manifest, _, raw = corpus
    for take in FRAME_TAKES_OK:
        e = _entry(manifest, take)
        assert e["status"] == "accepted", e["reason"]
        assert e["path"] in (f"takes/{take}", "frames/pf05006")
        assert e["n_frames"] == 9 and e["width"] == 96 and e["height"] == 96
        assert e["fps"] == 10 and pd.isna(e["file_fps"])
        assert e["duration_s"] == pytest.approx(0.9)
    assert _entry(manifest, "pf05000-cam_c")["sha256"] != _entry(manifest, "pf05005-cam_c")["sha256"]


def test_entries_inside_a_linked_folder_are_counted(corpus) -> None:
    manifest, report, _ = corpus
    assert report["accounting"]["entries_inside_linked_folders"] == 2
    assert "2 entries" in _entry(manifest, "takes/linkdir")["reason"]
    assert "cannot be listed" in _entry(manifest, "takes/locked")["reason"]
    assert report["accounting"]["folders_not_listed"] == 1


def test_stream_damage_is_counted_per_frame(corpus) -> None:
    manifest, _, _ = corpus
    reason = _entry(manifest, "pf06666-cam_c")["reason"]
    assert "damaged stream" in reason and "frames" in reason


def test_nothing_is_lost_and_the_counts_add_up(corpus) -> None:
    manifest, report, raw = corpus
    log_rows = len(pd.read_csv(raw / "capture_log.csv"))
    files = sorted(discover_mod.display_path(p.relative_to(raw).as_posix()) for p in (raw / "takes").iterdir())
    assert report["log_rows"] == log_rows == int(manifest["log_line"].notna().sum())
    listed = manifest["path"].dropna().tolist()
    withdrawn = {f"takes/{t}.mp4" for t in WITHDRAWN}  # counted by their blanked rows, see _entry
    for f in files:
        assert listed.count(f) == (0 if f in withdrawn else 1), f"{f} listed {listed.count(f)} times"
    assert int((manifest["reason_code"] == "consent_withdrawn").sum()) == len(WITHDRAWN)
    assert report["accepted"] + report["quarantined"] == report["manifest_rows"] == len(manifest)
    assert report["manifest_rows"] == log_rows + report["orphan_files"]
    assert report["accounting"]["adds_up"] is True
    assert len(report["quarantined_items"]) == report["quarantined"]
    assert report["accepted"] == len(UNTOUCHED) + len(FRAME_TAKES_OK)


def test_reasons_name_the_file_line_and_field(corpus) -> None:
    manifest, _, _ = corpus
    bad_enum = _entry(manifest, "pf00002-cam_r30")["reason"]
    assert "capture_log.csv line" in bad_enum and "field 'illumination'" in bad_enum and "'sunset'" in bad_enum
    assert "25" in _entry(manifest, "pf00001-cam_r30")["reason"]
    assert (
        "same bytes" in _entry(manifest, "pf09999-cam_c")["reason"]
        and "pf00002-cam_c" in _entry(manifest, "pf09999-cam_c")["reason"]
    )


def test_the_escaping_path_is_never_opened(corpus) -> None:
    manifest, _, _ = corpus
    e = _entry(manifest, "pf00003-cam_r30")
    assert pd.isna(e["sha256"]) and pd.isna(e["n_frames"])


def test_manifest_round_trips_through_parquet(corpus, tmp_path: Path) -> None:
    manifest, _, _ = corpus
    manifest.to_parquet(tmp_path / "m.parquet", index=False)
    back = pd.read_parquet(tmp_path / "m.parquet")
    assert "takes/pf00003-cäm_c.mp4" in set(back["path"])
    assert len(back) == len(manifest)


def test_the_entrys_own_problem_is_its_primary_reason(corpus) -> None:
    manifest, report, _ = corpus
    assert _entry(manifest, "takes/pipe.mp4")["reason_code"] == "special_file"
    assert report["primary_reason_counts"]["link_loop"] == 1


def _crashing_probe(path: Path) -> ProbeResult:
    """A decoder that segfaults on one take and hangs on another (runs in a spawned worker)."""
    if path.name == "pf00006-cam_c.mp4":
        os.kill(os.getpid(), signal.SIGSEGV)
    if path.name == "pf00007-cam_c.mp4":
        time.sleep(120)
    return probe_take(path)


def test_a_decoder_crash_or_hang_quarantines_only_its_take(raw_copy: Path, params: Params) -> None:
    fast = params.model_copy(update={"ingest": params.ingest.model_copy(update={"probe_timeout_s": 2.0, "workers": 2})})
    started = time.monotonic()
    manifest, report = ingest(fast, raw_copy, probe=_crashing_probe)
    assert time.monotonic() - started < 60
    crashed, hung = _entry(manifest, "pf00006-cam_c"), _entry(manifest, "pf00007-cam_c")
    assert crashed["reason_code"] == "decoder_crash" and "crashed" in crashed["reason"]
    assert hung["reason_code"] == "decoder_timeout" and "hung" in hung["reason"]
    others = manifest[~manifest["take_id"].isin(["pf00006-cam_c", "pf00007-cam_c"])]
    assert (others["status"] == "accepted").all(), others["reason"].dropna().tolist()
    assert report["accounting"]["adds_up"] is True


def test_a_linked_takes_folder_is_walked_and_judged_by_where_it_leads(raw_copy: Path, params: Params) -> None:
    (raw_copy / "takes").rename(raw_copy / "real_takes")
    (raw_copy / "takes").symlink_to(raw_copy / "real_takes")
    manifest, report = ingest(params, raw_copy)
    assert report["accepted"] == 16 and report["orphan_files"] == 0  # inside the raw folder: fine

    outside = raw_copy.parent / "elsewhere"
    (raw_copy / "real_takes").rename(outside)
    (raw_copy / "takes").unlink()
    (raw_copy / "takes").symlink_to(outside)
    manifest, report = ingest(params, raw_copy)
    assert report["accepted"] == 0
    assert set(manifest["reason_code"]) == {"path_escape"}, manifest["reason"].tolist()[:3]


# ---- faults of the machine: stop, exit 2, nothing recorded ------------------------------------------


def _out_of_memory_probe(path: Path) -> ProbeResult:
    if path.name == "pf00002-cam_c.mp4":
        raise MemoryError
    return probe_take(path)


def test_memory_running_out_in_a_probe_worker_stops_ingest_without_quarantining(raw_copy: Path, params: Params) -> None:
    """Memory is the machine's fault, not the take's: no take is quarantined for it, the stage stops."""
    two = params.model_copy(update={"ingest": params.ingest.model_copy(update={"workers": 2})})
    with pytest.raises(EnvironmentFault, match="MemoryError"):
        ingest(two, raw_copy, probe=_out_of_memory_probe)


def test_an_unlistable_folder_for_lack_of_file_handles_stops_ingest(raw_copy: Path, params: Params) -> None:
    def no_handles(path: Path) -> list[os.DirEntry]:
        raise OSError(24, "Too many open files", str(path))

    with pytest.raises(EnvironmentFault, match="Too many open files"):
        ingest(params, raw_copy, lister=no_handles)


class _FullDisk:
    """`pipeline.utils.io` on a full disk: every write fails with ENOSPC, as the OS says it."""

    def write_parquet(self, dest: Path, df: pd.DataFrame) -> None:
        raise OSError(28, "No space left on device", str(dest))

    def write_json(self, dest: Path, obj: object) -> None:
        raise OSError(28, "No space left on device", str(dest))


def test_a_full_disk_when_writing_the_manifest_exits_2_and_records_nothing(
    raw_copy: Path, layout: Layout, params: Params, caplog: pytest.LogCaptureFixture
) -> None:
    assert invoke(ingest_stage, layout, params, raw=str(raw_copy), writer=_FullDisk()) == 2
    assert not layout.manifest.exists() and not layout.ingest_report.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "\n" not in errors[0]


def test_the_shell_writes_manifest_and_report_with_provenance(raw_copy: Path, layout: Layout, params: Params) -> None:
    assert invoke(ingest_stage, layout, params, raw=str(raw_copy), writer=io) == 0
    report = pd.read_json(layout.ingest_report, typ="series")
    assert report["accepted"] == 16 and report["raw_dir"] == str(raw_copy)
    assert report["provenance"]["params"]["ingest"]["workers"] == params.ingest.workers
    assert len(pd.read_parquet(layout.manifest)) == 16
