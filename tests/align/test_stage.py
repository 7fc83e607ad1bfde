"""The align stage: incremental, flags bad takes and goes on, Dask equals local, clear pack errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.align import stage
from pipeline.align.detectors.insightface import InsightFaceDetector, InsightFacePackError
from pipeline.ingest.run import ingest
from pipeline.params import Params


def _params(params: Params, raw: Path, **align) -> Params:
    a = params.align.model_copy(update={"workers": 1, **align})
    return params.model_copy(update={"ingest": params.ingest.model_copy(update={"raw_dir": str(raw)}), "align": a})


class Workspace:
    """A raw capture, its manifest and the stage's outputs, all under one temp folder."""

    def __init__(self, raw: Path, params: Params) -> None:
        self.raw, self.root = raw, raw.parent
        self.params = params
        self.out = self.root / "aligned"
        self.manifest = self.root / "manifest.parquet"
        self.reingest()

    def reingest(self) -> None:
        m, _ = ingest(self.params, self.raw)
        m.to_parquet(self.manifest, index=False)

    def run(self, **align) -> dict:
        p = _params(self.params, self.raw, **align)
        return stage.run(p, self.manifest, self.out, self.root / "qc.parquet", self.root / "takes.parquet", self.root / "align.json")


@pytest.fixture
def ws(raw_copy: Path, params: Params) -> Workspace:
    return Workspace(raw_copy, params)


def test_second_run_does_nothing_and_one_new_take_is_one_job(ws: Workspace) -> None:
    first = ws.run()
    assert first["takes_processed"] == 16 and first["takes_up_to_date"] == 0
    assert ws.run()["takes_processed"] == 0
    # a new take arrives: copy one video under a new id with its own log row
    log = pd.read_csv(ws.raw / "capture_log.csv")
    row = log.iloc[0].copy()
    row["take_id"], row["file"] = "pf00100-cam_c", "takes/pf00100-cam_c.mp4"
    src = ws.raw / log.iloc[0]["file"]
    data = bytearray(src.read_bytes())
    shutil.copy(src, ws.raw / row["file"])
    (ws.raw / row["file"]).write_bytes(bytes(data) + b"\0" * 8)  # different bytes, same frames
    pd.concat([log, row.to_frame().T]).to_csv(ws.raw / "capture_log.csv", index=False)
    ws.reingest()
    again = ws.run()
    assert again["takes_processed"] == 1 and again["takes_up_to_date"] == 16


def test_parameter_change_redoes_all_and_removed_take_loses_its_output(ws: Workspace) -> None:
    ws.run()
    assert ws.run(keyframe_every=2)["takes_processed"] == 16
    log = pd.read_csv(ws.raw / "capture_log.csv")
    gone = log.iloc[-1]["take_id"]
    log.iloc[:-1].to_csv(ws.raw / "capture_log.csv", index=False)
    (ws.raw / log.iloc[-1]["file"]).unlink()
    ws.reingest()
    rep = ws.run(keyframe_every=2)
    assert rep["outputs_removed"] == 1 and rep["takes_processed"] == 0
    assert not (ws.out / f"{gone}.npz").exists()


def test_outputs_and_tables(ws: Workspace) -> None:
    ws.run()
    z = np.load(ws.out / "pf00000-cam_c.npz")
    assert z["frames"].shape == (8, 112, 112, 3) and z["frames"].dtype == np.uint8
    assert z["points"].shape == (8, 5, 2) and z["valid"].all()
    qc = pd.read_parquet(ws.root / "qc.parquet")
    assert len(qc) == 16 * 8
    assert {"score", "blur", "brightness", "iod_px", "yaw_est", "jitter", "source"} <= set(qc.columns)
    takes = pd.read_parquet(ws.root / "takes.parquet")
    assert set(takes["status"]) <= {"ok", "flagged"} and len(takes) == 16
    assert not list(ws.out.glob(".*tmp*")), "temporary files left behind"


def test_corrupt_video_mid_stream_is_flagged_and_the_stage_goes_on(ws: Workspace) -> None:
    """The file goes bad after ingest accepted it (ingest itself quarantines such files)."""
    victim = ws.raw / "takes" / "pf00001-cam_c.mp4"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    rep = ws.run()
    takes = pd.read_parquet(ws.root / "takes.parquet").set_index("take_id")
    assert rep["takes"] == 16 and rep["takes_processed"] == 16  # every other take was processed
    t = takes.loc["pf00001-cam_c"]
    assert t["status"] == "flagged" and "decode_stopped" in t["reason_codes"], t["reason"]
    assert (takes.drop("pf00001-cam_c")["decoded_frames"] == 8).all()


def test_dask_local_cluster_gives_identical_outputs(ws: Workspace, tmp_path: Path) -> None:
    ws.run()
    local = {p.name: np.load(p) for p in ws.out.glob("*.npz")}
    dask_out = tmp_path / "dask"
    p = _params(ws.params, ws.raw, executor="dask", workers=2)
    rep = stage.run(p, ws.manifest, dask_out, tmp_path / "q.parquet", tmp_path / "t.parquet", tmp_path / "a.json")
    assert rep["takes_processed"] == 16 and rep["executor"] == "dask"
    for name, a in local.items():
        b = np.load(dask_out / name)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")


def test_missing_insightface_pack_is_one_clear_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MVFER_INSIGHTFACE_PACK", raising=False)
    missing = tmp_path / "buffalo_l"
    with pytest.raises(InsightFacePackError) as e:
        InsightFaceDetector(pack=missing)
    msg = str(e.value)
    assert str(missing) in msg and "align.insightface_pack" in msg and "\n" not in msg
    missing.mkdir()
    with pytest.raises(InsightFacePackError, match="holds no detector"):
        InsightFaceDetector(pack=missing)
    with pytest.raises(InsightFacePackError, match="no insightface pack configured"):
        InsightFaceDetector(pack="")


def test_broken_insightface_pack_is_one_clear_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MVFER_INSIGHTFACE_PACK", raising=False)
    pack = tmp_path / "buffalo_l"
    pack.mkdir()
    (pack / "det_10g.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(InsightFacePackError) as e:
        InsightFaceDetector(pack=pack)
    assert "cannot load" in str(e.value) and "det_10g.onnx" in str(e.value) and "\n" not in str(e.value)


def test_stage_reports_a_missing_pack_without_traceback(ws: Workspace, caplog, monkeypatch) -> None:
    monkeypatch.delenv("MVFER_INSIGHTFACE_PACK", raising=False)
    with pytest.raises(InsightFacePackError):
        ws.run(detector="insightface", insightface_pack=str(ws.root / "nowhere"))
