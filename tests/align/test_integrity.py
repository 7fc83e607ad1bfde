"""Aligned outputs are verified before they are trusted; the cache key follows code, weights, env;
a run killed with SIGKILL leaves nothing in data/aligned and its rerun gives the same bytes."""

from __future__ import annotations

import os
import shutil
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
from pipeline.params import Params
from pipeline.utils import io
from tests.align.project import Project, align_cmd, child_env, run_align


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


def test_damaged_outputs_are_rebuilt_with_a_warning_never_trusted(project: Project, caplog) -> None:
    project.run()
    files = sorted(project.out.glob("*.npz"))
    good = project.aligned_bytes()
    # a flipped byte in different members, in the zip directory, in the recorded digest; truncation; junk
    for p, member in zip(files, ("frames", "key", "points", "valid", "matrices", "take_id")):
        _flip(p, _member_offset(p, member))
    _flip(files[6], len(good[files[6].name]) - 200)  # central directory
    _flip(files[7], len(good[files[7].name]) - 5)  # the recorded sha256 itself
    files[8].write_bytes(good[files[8].name][: len(good[files[8].name]) // 2])
    files[9].write_bytes(b"")
    files[10].write_bytes(b"PK\x03\x04 not a zip at all")
    damaged = {p.stem for p in files[:11]}
    with caplog.at_level("WARNING"):
        rep = project.run()
    assert rep["takes_processed"] == 11 and set(rep["outputs_damaged_rebuilt"]) == damaged
    assert rep["takes_up_to_date"] == 5
    assert sum("rebuilding" in r.getMessage() for r in caplog.records) == 11
    assert project.aligned_bytes() == good  # rebuilt to the same bytes
    assert project.run()["takes_processed"] == 0


def test_an_output_with_the_wrong_key_or_foreign_writer_is_redone(project: Project) -> None:
    project.run()
    p = sorted(project.out.glob("*.npz"))[0]
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    io.write_npz(p, arrays | {"key": np.array("0" * 32)})  # intact, but made from other inputs
    np.savez_compressed(sorted(project.out.glob("*.npz"))[1], **arrays)  # right key, but no recorded sha256
    rep = project.run()
    assert rep["takes_processed"] == 2 and len(rep["outputs_damaged_rebuilt"]) == 1


def test_code_or_weights_change_reprocesses_every_take(project: Project) -> None:
    a = project.params.align
    prov = prov_mod.provenance(a.detector, a.insightface_pack)
    manifest = pd.read_parquet(project.layout.manifest)
    args = (manifest, project.raw, project.out, project.layout.stage_tmp("align"), a)
    assert stage.align(*args, prov)[2]["takes_processed"] == 16
    assert stage.align(*args, prov)[2]["takes_processed"] == 0
    other = prov | {"code_sha256": "another code hash"}
    assert stage.align(*args, other)[2]["takes_processed"] == 16
    other = other | {"weights_sha256": ["other weights"]}
    assert stage.align(*args, other)[2]["takes_processed"] == 16


def test_provenance_follows_the_code_the_weights_and_the_env(tmp_path: Path, monkeypatch) -> None:
    from pipeline.align.detectors.mtcnn import find_weights_dir

    monkeypatch.delenv("MVFER_MTCNN_WEIGHTS", raising=False)
    base = prov_mod.provenance("mtcnn", "")
    assert {
        "pipeline.align.process",
        "pipeline.align.tracking",
        "pipeline.align.template",
        "pipeline.align.detectors.mtcnn",
        "pipeline.utils.io",
        "pipeline.utils.frames",
    } <= set(base["modules"])
    assert (
        "pipeline.align.stage" not in base["modules"] and "pipeline.align.detectors.insightface" not in base["modules"]
    )
    # the same source elsewhere hashes the same; an edit of a module in the closure changes the code hash
    pkg = tmp_path / "pipeline"
    shutil.copytree(Path(prov_mod.__file__).resolve().parents[1], pkg, ignore=shutil.ignore_patterns("__pycache__"))
    assert prov_mod.provenance("mtcnn", "", package_dir=pkg)["code_sha256"] == base["code_sha256"]
    edited = tmp_path / "edited" / "pipeline"
    shutil.copytree(pkg, edited)
    (edited / "align" / "tracking.py").write_text((edited / "align" / "tracking.py").read_text() + "\n# changed\n")
    assert prov_mod.provenance("mtcnn", "", package_dir=edited)["code_sha256"] != base["code_sha256"]
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
    monkeypatch.delenv("MVFER_DASK_SCHEDULER")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert prov_mod.provenance_key(logged) == prov_mod.provenance_key(prov_mod.provenance("mtcnn", ""))


@pytest.mark.integration
def test_kill_9_mid_run_leaves_no_temp_in_the_output_and_the_rerun_gives_the_same_bytes(
    tiny_raw: Path, tiny_manifest: pd.DataFrame, params: Params, tmp_path: Path
) -> None:
    ref = Project(
        tmp_path / "ref",
        tiny_raw,
        params.model_copy(update={"align": params.align.model_copy(update={"keyframe_every": 1})}),
        tiny_manifest,
    )
    ref.run()
    killed = Project(tmp_path / "killed", tiny_raw, ref.params, tiny_manifest)
    root, aligned = killed.layout.root, killed.out
    proc = subprocess.Popen(
        align_cmd(),
        cwd=root,
        env=child_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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
    assert sorted(p.name for p in aligned.iterdir() if not p.name.endswith(".npz")) == [], (
        "temp file inside data/aligned"
    )
    assert all(io.npz_problem(p) is None for p in aligned.glob("*.npz"))  # every file there is complete
    assert not killed.layout.align_takes.exists() and not killed.layout.align_report.exists()
    tmp = killed.layout.stage_tmp("align")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / ".pf00000-cam_c.npz.abc.tmp.npz").write_bytes(b"partial")  # as a kill mid-write leaves it
    run_align(root)
    assert not tmp.exists() or not any(tmp.iterdir())
    assert killed.aligned_bytes() == ref.aligned_bytes()
