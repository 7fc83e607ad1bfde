"""What an annotator gets, in a real browser: Debian's Chromium driven by Selenium against a real
Label Studio on loopback. Log in through the login page, open a labeling page, check the video
really decodes, step to a frame, mark onset and apex on the timeline, pick the expression, submit,
pull, run QA, and check the frames and the label arrive exactly as marked (0-based take frames).

The page can reach only 127.0.0.1 (host-resolver rules). The screenshot of the labeling page is
saved under the test's tmp folder, and copied to $MVFER_SCREENSHOT when set (README's picture:
`MVFER_SCREENSHOT=docs/annotator_labeling_page.png pytest tests/annotate/test_browser.py`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from selenium import webdriver
from selenium.common.exceptions import (ElementClickInterceptedException, NoSuchElementException,
                                        StaleElementReferenceException)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from pipeline import paths
from pipeline.annotate import server
from pipeline.annotate.accounts import add_annotator
from pipeline.annotate.frames import player_frame
from pipeline.annotate.sync import PushOptions, pull, push
from pipeline.params import Params
from pipeline.qa import stage as qa_stage

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
RESULT = "return JSON.stringify(window.Htx ? Htx.annotationStore.selected.serializeAnnotation() : [])"
REDRAWN = (StaleElementReferenceException, NoSuchElementException, ElementClickInterceptedException)
VIDEO = "const v = document.querySelector('video'); return v && [v.readyState, v.videoWidth, v.duration, v.currentTime]"


def _wait(cond, timeout: float = 30.0, what: str = "condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _retry(action, what: str, timeout: float = 20.0):
    """Run a page action again when React redrew the element under it (the page keeps re-rendering)."""
    t0 = time.monotonic()
    while True:
        try:
            return action()
        except REDRAWN:
            if time.monotonic() - t0 > timeout:
                raise
            time.sleep(0.3)


def _marked(d: WebDriver) -> dict[str, list[tuple[float, float]]]:
    """Timeline marks in the page's own annotation (player frames), to act only once per mark."""
    import json

    out: dict[str, list[tuple[float, float]]] = {}
    for r in json.loads(d.execute_script(RESULT)):
        if r.get("type") == "timelinelabels":
            for name in r["value"]["timelinelabels"]:
                out.setdefault(name, []).extend((g["start"], g["end"]) for g in r["value"]["ranges"])
    return out


@pytest.fixture
def browser():
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "install Debian's chromium and chromium-driver (`make test` does)"
    o = webdriver.ChromeOptions()
    o.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000",
                "--autoplay-policy=no-user-gesture-required", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        o.add_argument(arg)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=o)
    try:
        yield d
    finally:
        d.quit()


def _frame_shown(d: WebDriver) -> int | None:
    """The player's own frame counter, "k of N" (1-based)."""
    shown = d.find_elements(By.CSS_SELECTOR, ".lsf-frames-control")
    return int(shown[0].text.split()[0]) if shown and shown[0].text.strip() else None


def _go_to_frame(d: WebDriver, k: int) -> None:
    """Type a player frame into the frame counter, as an annotator can."""
    def act() -> None:
        if not d.find_elements(By.CSS_SELECTOR, ".lsf-frames-control input"):
            d.find_element(By.CSS_SELECTOR, ".lsf-frames-control").click()
        box = d.find_element(By.CSS_SELECTOR, ".lsf-frames-control input")
        box.send_keys(*[Keys.BACKSPACE] * 6, *[Keys.DELETE] * 6, str(k), Keys.ENTER)

    _retry(act, "the frame counter")
    _wait(lambda: _frame_shown(d) == k, 10, f"frame {k} (the counter shows {_frame_shown(d)})")


def _mark(d: WebDriver, label: str, k: int) -> None:
    """Pick a timeline label, then click the empty timeline band at player frame k (once)."""
    def pick() -> bool:
        el = next((el for el in d.find_elements(By.CSS_SELECTOR, ".lsf-label") if el.text.split()[:1] == [label]), None)
        if el is None:
            return False
        if "lsf-label_selected" not in (el.get_attribute("class") or ""):
            el.click()
        return True

    def click() -> None:
        frames = d.find_element(By.CSS_SELECTOR, ".lsf-timeline-frames")
        css = lambda name: float(d.execute_script("return getComputedStyle(arguments[0]).getPropertyValue(arguments[1])", frames, name).strip().rstrip("px"))  # noqa: E731
        size, offset = css("--frame-size"), css("--offset")
        x = -frames.rect["width"] / 2 + offset + (k - 1) * size + size / 2
        ActionChains(d).move_to_element_with_offset(frames, x, frames.rect["height"] / 2 - 8).click().perform()

    _retry(lambda: _wait(lambda: _retry(pick, label), 20, f"the {label} label"), label)
    _retry(click, "the timeline")
    _wait(lambda: label in _marked(d), 10, f"the {label} mark")


def test_annotator_marks_frames_in_a_real_browser(live, tiny_manifest: pd.DataFrame, media_root: Path, params: Params,
                                                  browser: WebDriver, tmp_path: Path, monkeypatch) -> None:
    info, ls, data_dir, _ = live
    t0 = time.monotonic()
    res = push(ls, "mvfer-browser", tiny_manifest, media_root / "media", media_root, PushOptions(overlap=3))
    push_s = time.monotonic() - t0
    take = tiny_manifest[tiny_manifest["status"] == "accepted"].sort_values("take_id").iloc[0]
    task = next(t for t in ls.tasks.list(project=res["project_id"], fields="all", page_size=100).items if t.data["take_id"] == take.take_id)
    email = "browser-annotator@mvfer.local"
    password = add_annotator(ls, data_dir / server.DB_NAME, email)

    d = browser
    d.get(info.url + "/user/login/")
    d.find_element(By.NAME, "email").send_keys(email)
    d.find_element(By.NAME, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(lambda: "/user/login" not in d.current_url, 15, "the login to succeed")
    d.get(f"{info.url}/projects/{res['project_id']}/data?task={task.id}")

    ready, width, duration, _ = _wait(lambda: (v := d.execute_script(VIDEO)) and v[0] >= 2 and v, 30, "the video to decode")
    n, fps = int(take.n_frames), float(take.fps)
    assert ready >= 2 and width > 0
    assert abs(duration - n / fps) <= 1 / fps + 1e-3, (duration, n, fps)
    assert "was asked for" not in d.page_source  # the prompt is not shown by default
    assert d.find_elements(By.CSS_SELECTOR, "input[name='surprise']") and not any(
        el.is_selected() for el in d.find_elements(By.CSS_SELECTOR, ".lsf-choices input"))  # nothing pre-ticked

    onset, apex = 2, n - 3  # 0-based take frames the annotator means
    _go_to_frame(d, player_frame(apex))
    current = d.execute_script(VIDEO)[3]
    assert abs(current - apex / fps) < 0.5 / fps  # player frame k shows take frame k-1
    _mark(d, "onset", player_frame(onset))
    _mark(d, "apex", player_frame(apex))
    label = "surprise" if take.prompted_expression != "surprise" else "happiness"  # not the prompt: no anchoring
    _retry(lambda: d.find_element(By.CSS_SELECTOR, f"input[name='{label}']").click(), label)
    assert _marked(d) == {"onset": [(player_frame(onset),) * 2], "apex": [(player_frame(apex),) * 2]}
    bottom = d.execute_script("return Math.max(...[...document.querySelectorAll('.lsf-choices input, .lsf-label')]"
                              ".map(e => e.getBoundingClientRect().bottom))")
    assert bottom <= d.execute_script("return window.innerHeight"), "the labeling page must fit without scrolling"
    shot = tmp_path / "annotator_labeling_page.png"
    d.save_screenshot(str(shot))
    if os.environ.get("MVFER_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MVFER_SCREENSHOT"])
    _retry(lambda: d.find_element(By.CSS_SELECTOR, "button[aria-label='Submit current annotation']").click(), "Submit")
    _wait(lambda: ls.tasks.get(id=task.id).total_annotations == 1, 15, "the annotation to be saved")

    for name in ("REANNOTATION_QUEUE", "QA_MARKDOWN", "PLOTS"):
        monkeypatch.setattr(paths, name, tmp_path / name.lower())
    accepted = tiny_manifest[tiny_manifest["status"] == "accepted"]
    t0 = time.monotonic()
    summary = pull(ls, "mvfer-browser", set(accepted["take_id"]), exports_dir=tmp_path / "exports", snapshot=tmp_path / "snap.json",
                   n_frames=dict(zip(accepted["take_id"], accepted["n_frames"].astype(int))))
    pull_s = time.monotonic() - t0
    assert summary["annotations_usable"] == 1 and summary["mark_problems"] == {}
    accepted.to_parquet(tmp_path / "manifest.parquet", index=False)
    p = params.model_copy(update={"qa": params.qa.model_copy(update={"truth": str(tmp_path / "none.csv"), "reannotation_snapshot": ""})})
    qa_stage.run(p, snapshot=tmp_path / "snap.json", manifest_path=tmp_path / "manifest.parquet",
                 labels_path=tmp_path / "labels.parquet", report_path=tmp_path / "qa.json")
    row = pd.read_parquet(tmp_path / "labels.parquet").set_index("take_id").loc[take.take_id]
    assert (row["label"], row["onset_frame"], row["apex_frame"], row["n_annotations"]) == (label, onset, apex, 1)
    print(f"push {push_s:.2f} s, pull {pull_s:.2f} s")  # noqa: T201 - the measured figures README quotes (pytest -s)
