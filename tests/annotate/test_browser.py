"""What annotators get, in a real browser: Debian's Chromium driven by Selenium against a real Label
Studio on loopback, with mvfer's guard and page script.

- test_blind_annotators_mark_every_frame: two annotators made with add_annotator; annotator A labels
  one take per frame k = 1..N with the documented keys only (ArrowRight to step, O and A to mark,
  Submit), the video at least 320 px high; annotator B, with B's own browser session, reaches none of
  A's projects, tasks or answers and no gold answer, by page or by the API the page uses; pull and
  QA then hold apex k-1 (0-based) for the take marked at player frame k.
- test_careless_annotator_is_refused_or_flagged: a submission without marks, a mark past the end of
  the take, an edit of someone else's answer and a ground-truth flag are each refused; a gold answer
  changed after pull is found by QA.

The screenshot of the labeling page is copied to $MVFER_SCREENSHOT when set (the annotator guide's
picture: `MVFER_SCREENSHOT=docs/img/labeling-page.png pytest tests/annotate/test_browser.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from pipeline.annotate import server
from pipeline.annotate.accounts import add_annotator
from pipeline.annotate.export import LabelConfig
from pipeline.annotate.sync import PushOptions, load_gold, pull, push
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.qa import stage as qa_stage

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
VIDEO = "const v = document.querySelector('video'); return v && [v.readyState, v.videoWidth, v.duration, v.currentTime]"
BOX = (
    "return Math.max(...[...document.querySelectorAll('.lsf-video__main canvas, .lsf-video__main')]"
    ".map(e => e.getBoundingClientRect().height))"
)
FETCH = """const [method, url, body] = [arguments[0], arguments[1], arguments[2]];
const done = arguments[arguments.length - 1];
const csrf = (document.cookie.match(/csrftoken=([^;]+)/) || [])[1] || '';
fetch(url, {method, credentials: 'same-origin', headers: {'Content-Type': 'application/json', 'X-CSRFToken': csrf},
            body: body ? JSON.stringify(body) : undefined})
  .then(async r => done([r.status, await r.text()])).catch(e => done([0, String(e)]));"""
TITLE = "mvfer"


def _wait(cond, timeout: float = 30.0, what: str = "condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(0.15)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _browser() -> WebDriver:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "install Debian's chromium and chromium-driver (`make test` does)"
    )
    o = webdriver.ChromeOptions()
    o.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--autoplay-policy=no-user-gesture-required",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        o.add_argument(arg)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=o)
    d.set_script_timeout(20)
    return d


def _login(d: WebDriver, url: str, email: str, password: str) -> None:
    d.get(url + "/user/login/")
    d.find_element(By.NAME, "email").send_keys(email)
    d.find_element(By.NAME, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(lambda: "/user/login" not in d.current_url, 15, "the login to succeed")


def _api(d: WebDriver, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """A request with the browser's own session, as the page's scripts make them."""
    status, text = d.execute_async_script(FETCH, method, path, body)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _open_task(d: WebDriver, url: str, project: int, task: int) -> None:
    d.get(f"{url}/projects/{project}/data?task={task}")
    _wait(lambda: (v := d.execute_script(VIDEO)) and v[0] >= 2 and v[1] > 0, 30, "the video to decode")
    _wait(
        lambda: d.execute_script("return !!document.getElementById('mvfer-bar') && window.mvfer.currentFrame() === 1"),
        15,
        "mvfer's page controls",
    )


def _click_css(d: WebDriver, css: str, timeout: float = 20) -> None:
    """Click the element matching `css` once it is there, again when React redrew it under the click."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            found = d.find_elements(By.CSS_SELECTOR, css)
            if found:
                found[0].click()
                return
        except StaleElementReferenceException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"nothing matches {css!r} after {timeout:.0f} s")


def _click_text(d: WebDriver, text: str, timeout: float = 20) -> None:
    """Click the button showing `text`, again when React redrew it under the click."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            for b in d.find_elements(By.TAG_NAME, "button"):
                if text in b.text:
                    b.click()
                    return
        except StaleElementReferenceException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no button {text!r} after {timeout:.0f} s")


def _key(d: WebDriver, key: str) -> None:
    """A key press as an annotator makes it, on the page (not inside a text field)."""
    d.execute_script(
        "if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur()"
    )
    ActionChains(d).send_keys(key).perform()


def _frame(d: WebDriver) -> int:
    """The frame shown (1-based), once the counter and the video agree; -1 while the video is still seeking."""
    k = d.execute_script("return window.mvfer.currentFrame()")
    return -1 if k is None else int(k)


def _settled(d: WebDriver) -> int:
    return _wait(lambda: _frame(d) if _frame(d) > 0 else None, 20, "the video to settle on a frame")


def _go(d: WebDriver, k: int) -> None:
    """Step to player frame k with ArrowRight/ArrowLeft; every press that moves the player moves it exactly one
    frame (a press the page drops while it is busy is pressed again)."""
    t0 = time.monotonic()
    while (before := _settled(d)) != k:
        assert time.monotonic() - t0 < 60, f"could not step from {before} to {k}"
        _key(d, Keys.ARROW_RIGHT if k > before else Keys.ARROW_LEFT)
        t1 = time.monotonic()
        while _frame(d) in (before, -1) and time.monotonic() - t1 < 4:
            time.sleep(0.1)
        after = _settled(d)
        assert abs(after - before) <= 1, f"one press moved the player from frame {before} to {after}"


def _mark_key(d: WebDriver, key: str, label: str, k: int) -> None:
    """Press a mark key on player frame k; the mark must land on k (a press dropped while the page was busy is
    pressed again: the key replaces its own earlier mark, so pressing twice changes nothing)."""
    for _ in range(3):
        _key(d, key)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:
            got = _marks(d).get(label)
            if got:
                assert got == [[k, k]], f"{label} landed on {got}, the player shows frame {_frame(d)}, wanted {k}"
                return
            time.sleep(0.1)
    raise AssertionError(f"no {label} mark after pressing {key!r} on frame {k}: marks {_marks(d)}")


def _marks(d: WebDriver) -> dict:
    return d.execute_script("return window.mvfer.marks()")


def _tick(d: WebDriver, label: str) -> None:
    _click_css(d, f"input[name='{label}']")


def _submit(d: WebDriver) -> None:
    _click_css(d, "button[aria-label='Submit current annotation']")


def _tasks(ls, project: int) -> list:
    return sorted(ls.tasks.list(project=project, fields="all", page_size=100).items, key=lambda t: t.data["take_id"])


@pytest.fixture(scope="module")
def lab(live, tiny_manifest: pd.DataFrame, media_root: Path):
    """Two annotators, each in their own workspace, every take pushed to both."""
    info, ls, data_dir, _ = live
    db = data_dir / server.DB_NAME
    accounts = {e: add_annotator(ls, db, e) for e in ("ana@lab.example", "ben@lab.example")}
    t0 = time.monotonic()
    res = push(
        ls,
        db,
        TITLE,
        tiny_manifest,
        media_root / "media",
        media_root,
        (ROOT / "annotations" / "labeling_config.xml").read_text(),
        PushOptions(overlap=2, seed=0),
        guide=ROOT / "docs" / "annotator-guide.md",
    )
    res["push_s"] = time.monotonic() - t0
    return info, ls, db, accounts, res


def _pull_and_qa(
    ls, db: Path, tmp_path: Path, manifest: pd.DataFrame, params: Params, **gold
) -> tuple[dict, dict, pd.DataFrame]:
    layout = Layout(tmp_path / "project")
    accepted = manifest[manifest["status"] == "accepted"]
    layout.interim.mkdir(parents=True)
    accepted.to_parquet(layout.manifest, index=False)
    shutil.copytree(ROOT / "annotations", layout.annotations, ignore=shutil.ignore_patterns("exports", "snapshot.json"))
    summary = pull(
        ls,
        db,
        TITLE,
        set(accepted["take_id"]),
        LabelConfig.load(layout.label_config),
        exports_dir=layout.annotation_exports,
        snapshot=layout.annotation_snapshot,
        n_frames=dict(zip(accepted["take_id"], accepted["n_frames"].astype(int))),
        **gold,
    )
    p = params.model_copy(
        update={
            "qa": params.qa.model_copy(
                update={
                    "snapshot": str(layout.annotation_snapshot),
                    "truth": str(tmp_path / "no-truth.csv"),
                    "reannotation_snapshot": "",
                }
            )
        }
    )
    report = qa_stage.run(layout, p)
    return summary, report, pd.read_parquet(layout.labels)


def test_blind_annotators_mark_every_frame(lab, tiny_manifest: pd.DataFrame, params: Params, tmp_path: Path) -> None:
    info, ls, db, accounts, res = lab
    (ana, pw_a), (ben, pw_b) = accounts.items()
    proj_a, proj_b = res["annotators"][ana]["project_id"], res["annotators"][ben]["project_id"]
    assert proj_a != proj_b and res["annotators"][ana]["imported"] == res["annotators"][ben]["imported"] == 16
    from pipeline.annotate.accounts import acting_in, annotator_orgs

    orgs = {e: o for o, e, _ in annotator_orgs(db)}
    with acting_in(db, orgs[ana]):
        tasks_a = _tasks(ls, proj_a)
    with acting_in(db, orgs[ben]):
        tasks_b = _tasks(ls, proj_b)
        assert ls.projects.get(id=proj_b).show_instruction and "onset" in ls.projects.get(id=proj_b).expert_instruction
    assert all(t.total_annotations == 0 for t in tasks_a + tasks_b)  # no stored gold answer anywhere
    n = int(tiny_manifest["n_frames"].iloc[0])
    fps = float(tiny_manifest["fps"].iloc[0])

    d = _browser()
    timings, marked = [], {}
    try:
        _login(d, info.url, ana, pw_a)
        for k in range(1, n + 1):  # take k-1 of A's queue: apex at player frame k, onset at ceil(k/2)
            task = tasks_a[k - 1]
            t0 = time.monotonic()
            _open_task(d, info.url, proj_a, task.id)
            if k == 1:
                height = d.execute_script(BOX)
                assert height >= 320, f"the video is {height:.0f} px high"
                bottom = d.execute_script(
                    "return Math.max(...[...document.querySelectorAll('.lsf-choices input, .lsf-label')]"
                    ".map(e => e.getBoundingClientRect().bottom))"
                )
                assert bottom <= d.execute_script("return window.innerHeight"), "the page must fit without scrolling"
                assert "was asked for" not in d.page_source and not any(
                    el.is_selected() for el in d.find_elements(By.CSS_SELECTOR, ".lsf-choices input")
                )  # nothing pre-ticked
            onset = (k + 1) // 2
            _go(d, onset)
            _mark_key(d, "o", "onset", onset)
            _go(d, k)
            _wait(  # player frame k shows take frame k-1, once the video has finished seeking
                lambda k=k: abs(d.execute_script(VIDEO)[3] - (k - 1) / fps) < 0.5 / fps, 10, f"the video at frame {k}"
            )
            _mark_key(d, "a", "apex", k)
            assert _marks(d) == {"onset": [[onset, onset]], "apex": [[k, k]]}
            _tick(d, "happiness")
            if k == n and os.environ.get("MVFER_SCREENSHOT"):
                d.save_screenshot(os.environ["MVFER_SCREENSHOT"])
            _submit(d)
            saved = f"/api/tasks/{task.id}/annotations/"
            _wait(lambda saved=saved: len(_api(d, "GET", saved)[1]) == 1, 15, "the annotation to be saved")
            timings.append(time.monotonic() - t0)
            marked[task.data["take_id"]] = (onset - 1, k - 1)
        a_annotation = _api(d, "GET", f"/api/tasks/{tasks_a[0].id}/annotations/")[1][0]["id"]
        d.quit()

        d = _browser()  # B's own browser (its own profile and cookies): the page, and the API the page uses
        _login(d, info.url, ben, pw_b)
        assert _api(d, "GET", "/api/current-user/whoami")[1]["email"] == ben
        status, body = _api(d, "GET", "/api/projects/")
        assert status == 200 and [p["id"] for p in body["results"]] == [proj_b]
        for path in (
            f"/api/projects/{proj_a}/",
            f"/api/tasks/?project={proj_a}",
            f"/api/tasks/{tasks_a[0].id}/",
            f"/api/tasks/{tasks_a[0].id}/annotations/",
            f"/api/annotations/{a_annotation}/",
            f"/api/projects/{proj_a}/next/",
            f"/api/dm/views/?project={proj_a}",
        ):
            got, _ = _api(d, "GET", path)
            assert got in (403, 404), (path, got)
        assert _api(d, "PATCH", f"/api/annotations/{a_annotation}/", {"result": []})[0] in (403, 404)
        assert _api(d, "PATCH", f"/api/projects/{proj_b}/", {"maximum_annotations": 5})[0] == 403  # no settings changes
        assert _api(d, "GET", f"/api/projects/{proj_b}/export?exportType=JSON")[0] == 403
        assert _api(d, "DELETE", f"/api/projects/{proj_b}/")[0] == 403
        assert (
            _api(d, "POST", f"/api/dm/actions?id=delete_tasks&project={proj_b}", {"selectedItems": {"all": True}})[0]
            == 403
        )
        assert _api(d, "POST", f"/api/projects/{proj_b}/import", [{"take_id": "x"}])[0] == 403
        assert _api(d, "GET", "/api/current-user/token")[0] == 403  # no API token for annotators
        own = _api(d, "GET", f"/api/tasks/?project={proj_b}&fields=all&page_size=100")[1]
        own_tasks = own["tasks"] if isinstance(own, dict) and "tasks" in own else own
        assert all(not t.get("annotations") and t.get("total_annotations", 0) == 0 for t in own_tasks)  # no gold, no A
        d.get(f"{info.url}/projects/{proj_a}/data?task={tasks_a[0].id}")
        assert (
            "happiness" not in d.page_source
            and "Not found" in d.page_source
            or d.execute_script(
                "return !window.Htx || !Htx.annotationStore || Htx.annotationStore.annotations.length === 0"
            )
        )
        _open_task(d, info.url, proj_b, tasks_b[0].id)
        assert d.execute_script("return Htx.annotationStore.annotations.length") <= 1  # only B's own draft
        # B's own task shows none of A's answers (A marked onset/apex and ticked happiness on every take): no
        # mark in the player, no choice ticked
        assert _marks(d) == {} and not any(
            el.is_selected() for el in d.find_elements(By.CSS_SELECTOR, ".lsf-choices input")
        )
        d.get(f"{info.url}/projects/{proj_b}/settings")
        assert "mvfer: annotators cannot" in d.page_source or "Not found" in d.page_source
    finally:
        d.quit()

    summary, report, labels = _pull_and_qa(ls, db, tmp_path, tiny_manifest, params)
    assert summary["annotations_usable"] == n and summary["annotators"] == 1 and summary["mark_problems"] == {}
    got = labels.set_index("take_id").loc[list(marked), ["onset_frame", "apex_frame"]]
    assert {t: (int(r.onset_frame), int(r.apex_frame)) for t, r in got.iterrows()} == marked  # exactly k-1
    assert any(a["annotator"] == ana for a in report["annotators"])  # named by account
    print(
        f"push {res['push_s']:.2f} s; seconds per take (open, step, mark, tick, submit): "  # noqa: T201 - docs' figure
        f"median {sorted(timings)[len(timings) // 2]:.1f}, max {max(timings):.1f}"
    )


def test_careless_annotator_is_refused_or_flagged(
    lab, tiny_manifest: pd.DataFrame, tiny_raw: Path, params: Params, tmp_path: Path
) -> None:
    info, ls, db, accounts, res = lab
    ben, pw_b = list(accounts.items())[1]
    proj_b = res["annotators"][ben]["project_id"]
    from pipeline.annotate.accounts import acting_in, annotator_orgs

    with acting_in(db, {e: o for o, e, _ in annotator_orgs(db)}[ben]):
        task = _tasks(ls, proj_b)[-1]
    n = int(task.data["n_frames"])
    d = _browser()
    try:
        _login(d, info.url, ben, pw_b)
        d.get(f"{info.url}/projects/{proj_b}/data")  # README step 1: the project, then "Label All Tasks"
        _click_text(d, "Label All Tasks")
        _wait(lambda: (v := d.execute_script(VIDEO)) and v[0] >= 2, 30, "the first task of the label stream")
        _open_task(d, info.url, proj_b, task.id)
        for button, frame in (("button[aria-label='Step forward']", 2), ("#mvfer-next", 3), ("#mvfer-prev", 2)):
            _click_css(d, button)  # Label Studio's own step button, and mvfer's: one frame
            _wait(lambda frame=frame: _frame(d) == frame, 15, f"frame {frame} after {button}")
        d.execute_script(
            "window.mvferPlayed = false;"
            "document.querySelector('video').addEventListener('play', () => { window.mvferPlayed = true; })"
        )
        _key(d, " ")  # Space plays (the 0.8 s take then stops at its end by itself)
        _wait(lambda: d.execute_script("return window.mvferPlayed"), 10, "Space to play the take")
        _wait(lambda: d.execute_script("return document.querySelector('video').paused"), 15, "the take to stop")
        _tick(d, "surprise")
        _submit(d)  # no marks: held back, with the reason shown
        _wait(lambda: "Not submitted: no onset mark" in d.find_element(By.ID, "mvfer-problem").text, 5, "the refusal")
        _go(d, n)
        _key(d, Keys.ARROW_RIGHT)  # no step past the last frame
        time.sleep(0.5)
        assert _settled(d) == n
        d.execute_script(
            "const v = Htx.annotationStore.selected.names.get('video');"
            "const l = Htx.annotationStore.selected.names.get('marks').children.find(x => x.value === 'apex');"
            "l.setSelected(true); v.startDrawing({frame: arguments[0]}); v.finishDrawing({mode: 'new'});"
            "l.setSelected(false);",
            n + 9,
        )  # what a click on a timeline column past the end gives
        _key(d, "o")
        _wait(lambda: "outside this take" in d.find_element(By.ID, "mvfer-problem").text, 5, "the flag on the bad mark")
        _submit(d)
        time.sleep(1.0)
        assert _api(d, "GET", f"/api/tasks/{task.id}/annotations/")[1] == []  # nothing saved
        marks = [
            {
                "from_name": "marks",
                "to_name": "video",
                "type": "timelinelabels",
                "value": {"ranges": [{"start": f, "end": f}], "timelinelabels": [name]},
            }
            for name, f in (("onset", 1), ("apex", n + 9))
        ]
        choice = [
            {"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": ["surprise"]}}
        ]
        status, body = _api(
            d, "POST", f"/api/tasks/{task.id}/annotations/?project={proj_b}", {"result": choice + marks}
        )
        assert status == 400 and "outside the take" in json.dumps(body)  # the server refuses it too
        status, body = _api(d, "POST", f"/api/tasks/{task.id}/annotations/?project={proj_b}", {"result": choice})
        assert status == 400 and "no onset mark" in json.dumps(body)
        marks[1]["value"]["ranges"] = [{"start": n, "end": n}]
        status, body = _api(
            d,
            "POST",
            f"/api/tasks/{task.id}/annotations/?project={proj_b}",
            {"result": choice + marks, "ground_truth": True},
        )
        assert status == 403  # no one makes their answer "gold"
        status, body = _api(
            d, "POST", f"/api/tasks/{task.id}/annotations/?project={proj_b}", {"result": choice + marks}
        )
        assert status == 201, body
    except AssertionError:
        d.save_screenshot(str(tmp_path / "failed.png"))  # what the page showed
        raise
    finally:
        d.quit()

    gold = load_gold(tiny_raw / "_truth" / "takes.csv")
    summary, report, _ = _pull_and_qa(
        ls, db, tmp_path / "first", tiny_manifest, params, gold=gold, gold_fraction=0.5, seed=0, gold_source="truth.csv"
    )
    assert summary["gold_added"] > 0 and report["gold"]["changed"] == []
    snap = tmp_path / "first" / "project" / "annotations" / "snapshot.json"
    tasks = json.loads(snap.read_text())
    g = next(a for t in tasks for a in t["annotations"] if a.get("mvfer_gold"))
    g["result"][0]["value"]["choices"] = ["anger" if g["result"][0]["value"]["choices"] != ["anger"] else "fear"]
    snap.write_text(json.dumps(tasks))  # someone edits a gold answer after the pull
    layout = Layout(tmp_path / "first" / "project")
    p = params.model_copy(
        update={
            "qa": params.qa.model_copy(
                update={"snapshot": str(snap), "truth": str(tmp_path / "no-truth.csv"), "reannotation_snapshot": ""}
            )
        }
    )
    rep = qa_stage.run(layout, p)
    assert len(rep["gold"]["changed"]) == 1 and "gold answer changed" in layout.qa_markdown.read_text()
