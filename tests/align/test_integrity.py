"""Aligned outputs are verified before they are trusted; the cache key follows code, weights, env;
a run killed with SIGKILL leaves nothing in data/aligned and its rerun gives the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.align import provenance as prov_mod
from pipeline.align import stage
from pipeline.utils import io
from tests.align.cli_root import REPO, align_cmd, aligned_bytes, child_env, make_root, run_align
from tests.align.test_stage import Workspace


@pytest.fixture
def ws(raw_copy: Path, params) -> Workspace:
    return Workspace(raw_copy, params)


def _member_offset(npz: Path, member: str) -> int:
    """Offset of the middle of a member's compressed data."""
    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo(f"{member}.npy")
    with open(npz, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len + info.compress_size // 2


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


def test_damaged_outputs_are_rebuilt_with_a_warning_never_trusted(ws: Workspace, caplog) -> None:
    ws.run()
    files = sorted(ws.out.glob("*.npz"))
    good = {p.name: p.read_bytes() for p in files}
    # a flipped byte in different members, in the zip directory, in the recorded digest; truncation; junk
    for p, member in zip(files, ("frames", "key", "points", "valid", "matrices", "take_id")):
        _flip(p, _member_offset(p, member))
    _flip(files[6], len(good[files[6].name]) - 200)     # central directory
    _flip(files[7], len(good[files[7].name]) - 5)       # the recorded sha256 itself
    files[8].write_bytes(good[files[8].name][: len(good[files[8].name]) // 2])
    files[9].write_bytes(b"")
    files[10].write_bytes(b"PK\x03\x04 not a zip at all")
    damaged = {p.stem for p in files[:11]}
    with caplog.at_level("WARNING"):
        rep = ws.run()
    assert rep["takes_processed"] == 11 and set(rep["outputs_damaged_rebuilt"]) == damaged
    assert rep["takes_up_to_date"] == 5
    assert sum("rebuilding" in r.getMessage() for r in caplog.records) == 11
    assert {p.name: p.read_bytes() for p in ws.out.glob("*.npz")} == good  # rebuilt to the same bytes
    assert ws.run()["takes_processed"] == 0


def test_an_output_with_the_wrong_key_or_foreign_writer_is_redone(ws: Workspace) -> None:
    ws.run()
    p = sorted(ws.out.glob("*.npz"))[0]
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    io.write_npz(p, arrays | {"key": np.array("0" * 32)})  # intact, but made from other inputs
    np.savez_compressed(sorted(ws.out.glob("*.npz"))[1], **arrays)  # right key, but no recorded sha256
    rep = ws.run()
    assert rep["takes_processed"] == 2 and len(rep["outputs_damaged_rebuilt"]) == 1


def test_code_or_weights_change_reprocesses_every_take(ws: Workspace, monkeypatch) -> None:
    ws.run()
    monkeypatch.setattr(stage, "provenance_key", lambda prov: "another code or weights hash")
    assert ws.run()["takes_processed"] == 16


def test_provenance_follows_the_code_the_weights_and_the_env(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from pipeline.align.detectors.mtcnn import find_weights_dir

    monkeypatch.delenv("MVFER_MTCNN_WEIGHTS", raising=False)
    prov_mod._code.cache_clear()
    base = prov_mod.provenance("mtcnn", "")
    assert {"pipeline.align.process", "pipeline.align.tracking", "pipeline.align.template", "pipeline.align.detectors.mtcnn",
            "pipeline.utils.io", "pipeline.utils.frames"} <= set(base["modules"])
    assert "pipeline.align.stage" not in base["modules"] and "pipeline.align.detectors.insightface" not in base["modules"]
    # an edit of a module in the closure changes the code hash
    pkg = tmp_path / "pipeline"
    shutil.copytree(Path(prov_mod.__file__).resolve().parents[1], pkg)
    (pkg / "align" / "tracking.py").write_text((pkg / "align" / "tracking.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(prov_mod, "_PACKAGE_DIR", pkg)
    prov_mod._code.cache_clear()
    assert prov_mod.provenance("mtcnn", "")["code_sha256"] != base["code_sha256"]
    monkeypatch.undo()
    prov_mod._code.cache_clear()
    # weights chosen by the environment: the variable and the files' content are keyed
    wdir = tmp_path / "weights"
    shutil.copytree(find_weights_dir(), wdir)
    monkeypatch.setenv("MVFER_MTCNN_WEIGHTS", str(wdir))
    same = prov_mod.provenance("mtcnn", "")
    assert same["weights_sha256"] == base["weights_sha256"] and same["env"] == {"MVFER_MTCNN_WEIGHTS": str(wdir)}
    assert prov_mod.provenance_key(same) != prov_mod.provenance_key(base)
    _flip(wdir / "onet.pt", 1000)
    assert prov_mod.provenance("mtcnn", "")["weights_sha256"] != base["weights_sha256"]
    # the executor address and the CPU code path are logged, not keyed
    monkeypatch.setenv("MVFER_DASK_SCHEDULER", "tcp://127.0.0.1:1")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    logged = prov_mod.provenance("mtcnn", "")
    assert logged["env_not_keyed"] == {"MVFER_DASK_SCHEDULER": "tcp://127.0.0.1:1", "ATEN_CPU_CAPABILITY": "default"}
    monkeypatch.setenv("MVFER_MTCNN_WEIGHTS", str(wdir))
    assert prov_mod.provenance_key(logged) == prov_mod.provenance_key(prov_mod.provenance("mtcnn", ""))


@pytest.mark.integration
def test_kill_9_mid_run_leaves_no_temp_in_the_output_and_the_rerun_gives_the_same_bytes(tiny_raw: Path, tmp_path: Path) -> None:
    ref = make_root(tmp_path / "ref", tiny_raw, keyframe_every=1)
    run_align(ref)
    root = make_root(tmp_path / "killed", tiny_raw, keyframe_every=1)
    aligned = root / "data" / "aligned"
    proc = subprocess.Popen(align_cmd(), cwd=REPO, env=child_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(aligned.glob("*.npz"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = len(list(aligned.glob("*.npz")))
    assert 2 <= done < 16
    assert sorted(p.name for p in aligned.iterdir() if not p.name.endswith(".npz")) == [], "temp file inside data/aligned"
    assert all(io.npz_problem(p) is None for p in aligned.glob("*.npz"))  # every file there is complete
    tmp = root / "data" / "interim" / ".tmp" / "align"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / ".pf00000-cam_c.npz.abc.tmp.npz").write_bytes(b"partial")  # as a kill mid-write leaves it
    run_align(root)
    assert not tmp.exists() or not any(tmp.iterdir())
    assert aligned_bytes(root) == aligned_bytes(ref)


def test_a_take_that_fails_is_flagged_and_the_stage_goes_on(ws: Workspace, monkeypatch, caplog) -> None:
    from pipeline.align import process

    real = process.align_take

    def flaky(take: Path, *args, **kwargs):
        if "pf00003" in take.name:
            raise RuntimeError("simulated failure\nsecond line")
        return real(take, *args, **kwargs)

    monkeypatch.setattr(process, "align_take", flaky)
    with caplog.at_level("WARNING"):
        rep = ws.run()
    takes = pd.read_parquet(ws.root / "takes.parquet").set_index("take_id")
    failed = [t for t in takes.index if "pf00003" in t]
    assert failed and rep["takes"] == 16
    assert (takes.loc[failed, "reason_codes"] == "align_failed").all()
    assert [e[1] for e in rep["take_errors"]] == ["RuntimeError: simulated failure"] * len(failed)
    assert (takes.drop(failed)["status"] == "ok").all()
    assert not (ws.root / ".tmp-align").exists(), "temp files left behind"
