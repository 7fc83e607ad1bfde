"""In Debian's Chromium, the proxy plays and the picture at time (k + 0.5) / fps is take frame k, for every k.

Why: the annotation timeline converts the player's time to a frame number; that is only right if the
browser shows frame k in frame k's interval (no dropped, duplicated or shifted frames, no edit-list offset).
"""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from pipeline.media.encode import encode_proxy
from tests.media.test_encode import CFG, distinct_frames, mad

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FPS, N = 10.0, 16

_GRAB = """
const [t, done] = arguments; const v = document.getElementById('v'), c = document.getElementById('c');
v.addEventListener('seeked', () => { c.getContext('2d').drawImage(v, 0, 0, c.width, c.height);
                                     done(c.toDataURL('image/png')); }, {once: true});
v.currentTime = t;
"""


@pytest.mark.integration
def test_chromium_shows_take_frame_k_at_frame_k(tmp_path: Path) -> None:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "install Debian's chromium and chromium-driver (`make test` does)"
    )
    frames = distinct_frames(N)
    encode_proxy(iter(frames), tmp_path / "proxy.mp4", FPS, CFG)
    (tmp_path / "page.html").write_text(
        '<video id="v" src="proxy.mp4" preload="auto" muted></video><canvas id="c" width="384" height="320"></canvas>'
    )
    o = webdriver.ChromeOptions()
    o.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--allow-file-access-from-files",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):
        o.add_argument(arg)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=o)
    try:
        d.set_script_timeout(30)
        d.get((tmp_path / "page.html").as_uri())
        d.execute_async_script(
            "const done = arguments[0], v = document.getElementById('v');"
            "if (v.readyState >= 2) done(); else v.addEventListener('loadeddata', () => done(), {once: true});"
        )
        state = d.execute_script(
            "const v = document.getElementById('v'); return [v.readyState, v.videoWidth, v.duration];"
        )
        assert state[0] >= 2 and state[1] == 384 and state[2] == pytest.approx(N / FPS, abs=1e-3)
        shown = []
        for k in range(N):
            url = d.execute_async_script(_GRAB, (k + 0.5) / FPS)
            img = cv2.imdecode(np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
            small = cv2.resize(img, (96, 80), interpolation=cv2.INTER_AREA)
            diffs = [mad(small, f) for f in frames]
            shown.append((int(np.argmin(diffs)), min(diffs)))
    finally:
        d.quit()
    assert [k for k, _ in shown] == list(range(N))
    assert max(m for _, m in shown) < 3.0
