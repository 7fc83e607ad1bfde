"""The media stage: incremental, rebuilds damaged proxies, reports bad takes and goes on, no temp files left;
a full disk stops it in one line with the finished proxies kept."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
import pytest
import yaml

from pipeline.errors import EnvironmentFault
from pipeline.layout import Layout
from pipeline.media import proxy_path, stage
from pipeline.media.encode import decode_frames, encode_proxy, probe_video
from pipeline.params import Params
from pipeline.stage import invoke
from pipeline.utils.frames import iter_frames, take_sha256
from pipeline.utils.io import sha256_file
from tests.media.test_encode import CFG, distinct_frames

REPO = Path(__file__).resolve().parents[2]


def manifest_of(raw: Path) -> pd.DataFrame:
    """The manifest columns the stage reads, built here (ingest's own behaviour is tested in tests/ingest)."""
    log = pd.read_csv(raw / "capture_log.csv")
    return pd.DataFrame(
        {
            "take_id": log["take_id"],
            "path": log["file"],
            "status": "accepted",
            "fps": log["fps"].astype(float),
            "file_fps": log["fps"].astype(float),
            "sha256": [take_sha256(raw / f) for f in log["file"]],
            "n_frames": [sum(1 for _ in iter_frames(raw / f)) for f in log["file"]],
        }
    )


@pytest.fixture(scope="session")
def tiny_media_manifest(tiny_raw: Path) -> pd.DataFrame:
    return manifest_of(tiny_raw)


class Project:
    """A project root (`Layout(root)`): params.yaml, a raw capture in data/raw, its manifest, the stage's outputs."""

    def __init__(self, root: Path, tiny_raw: Path, manifest: pd.DataFrame, params: Params) -> None:
        self.layout = Layout(root)
        self.raw = self.layout.raw
        shutil.copytree(tiny_raw, self.raw)
        self.params = params.model_copy(update={"ingest": params.ingest.model_copy(update={"raw_dir": "data/raw"})})
        self.layout.params_file.write_text(yaml.safe_dump(self.params.model_dump(by_alias=True, mode="json")))
        self.out, self.tmp = self.layout.media, self.layout.stage_tmp("media")
        self.manifest = manifest.copy()
        self.save()

    def save(self) -> None:
        self.layout.interim.mkdir(parents=True, exist_ok=True)
        self.manifest.to_parquet(self.layout.manifest, index=False)

    def accepted(self) -> list[str]:
        return sorted(self.manifest.loc[self.manifest["status"] == "accepted", "take_id"])

    def with_media(self, **media: Any) -> Params:
        return self.params.model_copy(update={"media": self.params.media.model_copy(update={"workers": 1, **media})})

    def run(self, **media: Any) -> dict:
        stage.run(self.layout, self.with_media(**media))
        return json.loads(self.layout.media_report.read_text())

    def replace_take(self, take_id: str, new_path: Path, n_frames: int | None = None) -> None:
        """Point a manifest row at another take (file or frame folder) as ingest would record it."""
        i = self.manifest.index[self.manifest["take_id"] == take_id][0]
        self.manifest.loc[i, ["path", "sha256"]] = [str(new_path.relative_to(self.raw)), take_sha256(new_path)]
        if n_frames is not None:
            self.manifest.loc[i, "n_frames"] = n_frames
        self.save()


@pytest.fixture
def ws(tmp_path: Path, tiny_raw: Path, tiny_media_manifest: pd.DataFrame, params: Params) -> Project:
    return Project(tmp_path / "root", tiny_raw, tiny_media_manifest, params)


def test_every_accepted_take_gets_a_proxy_with_its_frames(ws: Project) -> None:
    report = ws.run(workers=2)
    takes = ws.accepted()
    assert report["proxies"] == report["proxies_made"] == len(takes) == 16 and report["failed"] == []
    assert report["provenance"]["params"]["media"]["crf"] == 18
    assert sorted(p.name for p in ws.out.iterdir()) == sorted([f"{t}.mp4" for t in takes] + ["index.json"])
    index = json.loads((ws.out / "index.json").read_text())["takes"]
    row = ws.manifest.set_index("take_id").loc[takes[0]]
    info = probe_video(proxy_path(takes[0], ws.out))
    assert (
        info.codec == "h264" and info.height == 320 and info.n_frames == row["n_frames"] == index[takes[0]]["n_frames"]
    )
    assert index[takes[0]]["sha256"] == sha256_file(proxy_path(takes[0], ws.out))
    take = list(iter_frames(ws.raw / row["path"]))
    back = [
        cv2.resize(f, take[0].shape[1::-1], interpolation=cv2.INTER_AREA)
        for f in decode_frames(proxy_path(takes[0], ws.out))
    ]
    assert max(float(abs(a.astype(int) - b).mean()) for a, b in zip(back, take)) < 3.0
    assert not ws.tmp.exists()


def test_incremental_add_remove_and_parameter_change(ws: Project) -> None:
    ws.run()
    before = {t: sha256_file(proxy_path(t, ws.out)) for t in ws.accepted()}
    assert ws.run()["proxies_made"] == 0
    # a take leaves the manifest: its proxy goes; a new take arrives: one proxy is made
    gone = ws.accepted()[0]
    ws.manifest = ws.manifest[ws.manifest["take_id"] != gone]
    new = ws.manifest.iloc[[0]].copy()
    new["take_id"] = "pf00100-cam_c"
    ws.manifest = pd.concat([ws.manifest, new])
    ws.save()
    report = ws.run()
    assert report["proxies_made"] == 1 and report["proxies_removed"] == 1 and report["proxies_up_to_date"] == 15
    assert not proxy_path(gone, ws.out).exists() and proxy_path("pf00100-cam_c", ws.out).exists()
    assert all(sha256_file(proxy_path(t, ws.out)) == s for t, s in before.items() if t != gone)  # untouched
    assert ws.run(crf=28)["proxies_made"] == 16


def test_a_damaged_proxy_is_rebuilt_with_a_warning(ws: Project, caplog: pytest.LogCaptureFixture) -> None:
    ws.run()
    victim = proxy_path(ws.accepted()[3], ws.out)
    good = victim.read_bytes()
    victim.write_bytes(good[:-100])
    with caplog.at_level(logging.WARNING):
        report = ws.run()
    assert report["proxies_damaged_rebuilt"] == 1 and report["proxies_made"] == 1
    assert victim.read_bytes() == good  # deterministic: the very same bytes again
    assert any(victim.name in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)


def test_a_bad_take_is_reported_and_the_stage_goes_on(ws: Project) -> None:
    broken, short = ws.accepted()[1], ws.accepted()[2]
    path = ws.raw / ws.manifest.set_index("take_id").at[broken, "path"]
    path.write_bytes(b"\0\0\0\x18ftypisom" + b"x" * 300)  # damaged after ingest
    ws.replace_take(broken, path)
    i = ws.manifest.index[ws.manifest["take_id"] == short][0]
    ws.manifest.loc[i, "n_frames"] = 9  # the take decodes to 8 frames
    ws.save()
    report = ws.run()
    failed = {f["take_id"]: f["reason"] for f in report["failed"]}
    assert set(failed) == {broken, short} and report["proxies"] == 14
    assert path.name in failed[broken]
    assert "frame count differs" in failed[short] and "9" in failed[short]
    assert not proxy_path(broken, ws.out).exists() and not proxy_path(short, ws.out).exists()
    assert not list(ws.out.glob(".*")) and not ws.tmp.exists()  # no temp file left in or beside the output


def test_every_take_failing_is_one_line_and_exit_1(ws: Project, caplog: pytest.LogCaptureFixture) -> None:
    ws.manifest = ws.manifest.head(2).assign(n_frames=99)
    ws.save()
    with caplog.at_level(logging.ERROR):
        assert invoke(stage.run, ws.layout, ws.with_media()) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "every one of the 2 takes failed" in errors[0] and "\n" not in errors[0]
    assert json.loads(ws.layout.media_report.read_text())["proxies"] == 0  # the report says why, as before


def failing_encoder(frames: Any, dest: Path, fps: float, cfg: Any, *, first: str) -> tuple[int, int, int]:
    """encode_proxy until the take `first` (in take_id order), then a full disk for it and every later take."""
    if Path(dest).stem >= first:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dest))
    return encode_proxy(frames, dest, fps, cfg)


def test_a_full_disk_stops_the_stage_in_one_line_keeping_the_proxies_made(ws: Project) -> None:
    first = ws.accepted()[6]
    m = ws.with_media(workers=2).media
    args = (ws.manifest, ws.raw, ws.out, ws.tmp, m)
    with pytest.raises(EnvironmentFault) as e:
        stage.make_proxies(*args, encode=partial(failing_encoder, first=first))
    msg = str(e.value)
    assert "No space left on device" in msg and first in msg and "\n" not in msg, msg
    kept = json.loads((ws.out / "index.json").read_text())["takes"]
    assert sorted(kept) == ws.accepted()[:6]  # made before the fault, and indexed
    assert sorted(p.stem for p in ws.out.glob("*.mp4")) == ws.accepted()[:6]
    assert not ws.tmp.exists() and not ws.layout.media_report.exists()
    report = ws.run()  # space again: only the rest is made
    assert report["proxies_made"] == 10 and report["proxies_up_to_date"] == 6 and report["proxies"] == 16


def test_the_command_runs_the_stage_under_mvfer_root(ws: Project) -> None:
    """`python -m pipeline.media.stage` in another root: proxies in <root>/data/media, report in <root>/reports."""
    ws.manifest = ws.manifest.head(2)
    ws.save()
    root = ws.layout.root
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.media.stage"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "MVFER_ROOT": str(root), "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(ws.layout.media_report.read_text())
    assert report["proxies"] == 2 and report["provenance"]["stage_module"] == "pipeline.media.stage"
    assert sorted(p.name for p in ws.out.glob("*.mp4")) == sorted(f"{t}.mp4" for t in ws.manifest["take_id"])


def test_a_frame_folder_take_is_encoded(ws: Project) -> None:
    take_id = ws.accepted()[0]
    folder = ws.raw / "takes" / "folder_take"
    folder.mkdir()
    frames = distinct_frames(8)
    for k, f in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{k:04d}.png"), f)
    ws.replace_take(take_id, folder, n_frames=8)
    assert ws.run()["failed"] == []
    out = decode_frames(proxy_path(take_id, ws.out))
    back = [cv2.resize(f, (96, 80), interpolation=cv2.INTER_AREA) for f in out]
    assert len(out) == 8 and max(float(abs(a.astype(int) - b).mean()) for a, b in zip(back, frames)) < 3.0


def test_a_playable_rig_take_is_served_as_is_only_when_asked_and_decodable(ws: Project) -> None:
    ok_id, bad_id = ws.accepted()[:2]
    playable = ws.raw / "takes" / "playable.mp4"
    encode_proxy(iter(distinct_frames(8, w=384, h=320)), playable, 10.0, CFG)
    ws.replace_take(ok_id, playable, n_frames=8)
    truncated = ws.raw / "takes" / "truncated.mp4"
    truncated.write_bytes(playable.read_bytes()[: playable.stat().st_size // 2])
    ws.replace_take(bad_id, truncated, n_frames=8)
    report = ws.run(passthrough_playable=True)
    assert proxy_path(ok_id, ws.out).read_bytes() == playable.read_bytes() and report["passthrough"] == 1
    assert bad_id in {f["take_id"] for f in report["failed"]} and not proxy_path(bad_id, ws.out).exists()
    report = ws.run(passthrough_playable=False)  # a parameter change: re-encoded
    assert report["passthrough"] == 0 and proxy_path(ok_id, ws.out).read_bytes() != playable.read_bytes()


def _limit_file_size(limit: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_the_shell_over_the_file_size_limit_exits_2_in_one_line_and_writes_no_report(ws: Project) -> None:
    """`python -m pipeline.media.stage` with RLIMIT_FSIZE below one proxy: FFmpeg's EFBIG is the machine's fault."""
    ws.manifest = ws.manifest.head(3)
    ws.save()
    root = ws.layout.root
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.media.stage"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "MVFER_ROOT": str(root), "PYTHONPATH": str(REPO)},
        timeout=300,
        preexec_fn=partial(_limit_file_size, 4096),
    )
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [ln for ln in res.stderr.splitlines() if "environment" in ln]
    assert len(errors) == 1 and "File too large" in errors[0] and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert not ws.layout.media_report.exists() and not list(ws.out.glob("*.mp4"))
    assert ws.run()["proxies_made"] == 3
