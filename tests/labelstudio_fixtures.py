"""Label Studio test fixtures, loaded for the whole suite from tests/conftest.py (pytest_plugins):
Label Studio's home in a temporary folder (`ls_home`: server folders and the database template,
built once per session, never in the checkout), the tiny capture's manifest, H.264 proxies of its
takes, and a real server on loopback (`live`, one per test module).

The proxies are encoded here with PyAV (the lock's `av`), the way the media stage writes them, so
these tests do not depend on that stage; frame k of a proxy is frame k of the take.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.annotate import server
from pipeline.annotate.sync import client
from pipeline.ingest.run import ingest
from pipeline.params import Params


def encode_h264(frames: list[np.ndarray], dest: Path, fps: float) -> None:
    """BGR frames -> MP4/H.264, yuv420p, even size, moov first, one frame per pts step, no B-frames."""
    h, w = (d - d % 2 for d in frames[0].shape[:2])
    c = av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"})
    s = c.add_stream("libx264", rate=int(round(fps)), options={"bf": "0", "crf": "18"})
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for k, bgr in enumerate(frames):
        f = av.VideoFrame.from_ndarray(cv2.cvtColor(bgr[:h, :w], cv2.COLOR_BGR2RGB), format="rgb24")
        f.pts = k
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            return out
        out.append(img)


@pytest.fixture(scope="session")
def ls_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Label Studio's home for the tests: server folders beside `templates/`, where the database template
    is built once per session when a test needs it (about 40 s on a 2-core VM, as on a fresh CI checkout)."""
    return tmp_path_factory.mktemp("labelstudio")


@pytest.fixture(scope="session")
def tiny_manifest(tiny_raw: Path, params: Params) -> pd.DataFrame:
    manifest, _ = ingest(params, tiny_raw)
    return manifest


@pytest.fixture(scope="session")
def media_root(tiny_raw: Path, tiny_manifest: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/media/<take_id>.mp4 for every accepted take; <root> is Label Studio's document root."""
    root = tmp_path_factory.mktemp("docroot")
    (root / "media").mkdir()
    for r in tiny_manifest[tiny_manifest["status"] == "accepted"].itertuples():
        encode_h264(read_frames(tiny_raw / r.path), root / "media" / f"{r.take_id}.mp4", float(r.fps))
    return root


@pytest.fixture(scope="module")
def live(media_root: Path, ls_home: Path):
    """A real Label Studio on a free loopback port, with its own token; stopped by process group."""
    token = secrets.token_hex(20)
    data_dir = ls_home / f"server-{secrets.token_hex(4)}"
    info = server.start(data_dir, media_root, token=token)
    try:
        yield info, client(info.url, token), data_dir, token
    finally:
        server.stop(data_dir)
