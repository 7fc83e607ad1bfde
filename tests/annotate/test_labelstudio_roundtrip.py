"""A real Label Studio on loopback: push (idempotent, overlap, gold, proxies), annotators, pull, QA;
secrets (no template user, 0600/0700, token rotation, refused token, password never logged)."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import urllib.error
import urllib.request
from pathlib import Path

import av
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from pipeline import paths
from pipeline.annotate import server
from pipeline.annotate.accounts import add_annotator, check_token
from pipeline.annotate.sync import (REANNOTATION_SUFFIX, PushOptions, client, load_gold, marks_result, projects, pull, push,
                                    push_reannotation)
from pipeline.params import Params
from pipeline.qa import stage as qa_stage

pytestmark = pytest.mark.integration


def _get(url: str, token: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_round_trip(live, tiny_raw: Path, tiny_manifest: pd.DataFrame, media_root: Path, params: Params, tmp_path: Path, monkeypatch) -> None:
    info, ls, data_dir, token = live
    manifest = tiny_manifest
    n_frames = dict(zip(manifest["take_id"], manifest["n_frames"].astype(int)))
    gold = load_gold(tiny_raw / "_truth" / "takes.csv")
    opts = PushOptions(overlap=3, gold_fraction=0.25, seed=0)
    first = push(ls, "mvfer-test", manifest, media_root / "media", media_root, opts, gold=gold)
    assert first["imported"] == 16 and 0 < first["gold"] < 16
    again = push(ls, "mvfer-test", manifest, media_root / "media", media_root, opts, gold=gold)
    assert again["imported"] == 0 and again["already_present"] == 16  # idempotent
    pid = first["project_id"]
    project = ls.projects.get(id=pid)
    assert project.maximum_annotations == 3 and project.overlap_cohort_percentage == 100

    tasks = list(ls.tasks.list(project=pid, fields="all", page_size=100).items)
    status, body = _get(info.url + tasks[0].data["video"], token)  # the proxy is served, and it decodes
    assert status == 200
    (tmp_path / "served.mp4").write_bytes(body)
    with av.open(str(tmp_path / "served.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in c.decode(video=0)) == n_frames[tasks[0].data["take_id"]]

    uids = []
    for email in ("ann2@mvfer.local", "ann3@mvfer.local"):
        add_annotator(ls, data_dir / server.DB_NAME, email)
        uids.append(next(u.id for u in ls.users.list() if u.email == email))
    a_labels, b_labels = {}, {}
    prompted = manifest.set_index("take_id")["prompted_expression"]
    for k, t in enumerate(sorted(tasks, key=lambda t: t.data["take_id"])):
        take = t.data["take_id"]
        a_labels[take] = prompted[take]
        b_labels[take] = prompted[take] if k % 4 else ("fear" if prompted[take] != "fear" else "anger")
        unmarked = k == 0  # both leave the first take without marks: QA must queue it
        ls.annotations.create(id=t.id, result=marks_result(a_labels[take], None if unmarked else 1, None if unmarked else 5),
                              completed_by=uids[0], lead_time=20.0)
        ls.annotations.create(id=t.id, result=marks_result(b_labels[take], None if unmarked else 2, None if unmarked else 6),
                              completed_by=uids[1], lead_time=15.0)
    ls.annotations.create(id=tasks[1].id, result=[], was_cancelled=True, completed_by=uids[1])

    for name in ("REANNOTATION_QUEUE", "QA_MARKDOWN", "PLOTS"):
        monkeypatch.setattr(paths, name, tmp_path / name.lower())
    snapshot = tmp_path / "snapshot.json"
    summary = pull(ls, "mvfer-test", set(manifest["take_id"]), exports_dir=tmp_path / "exports", snapshot=snapshot, n_frames=n_frames)
    n_gold = first["gold"]
    assert summary["tasks"] == 16 and summary["annotations_usable"] == 32 + n_gold and summary["gold_annotations"] == n_gold
    assert summary["excluded"].get("cancelled_or_skipped") == 1 and summary["mark_problems"] == {"missing": 2}
    assert len(list((tmp_path / "exports").glob("export-*.json"))) == 1
    assert "Invalid page" not in (data_dir / "server.log").read_text(errors="replace")  # no request past the last page

    manifest_path = tmp_path / "manifest.parquet"
    manifest.to_parquet(manifest_path, index=False)
    p = params.model_copy(update={"qa": params.qa.model_copy(update={"truth": str(tiny_raw / "_truth" / "takes.csv"), "reannotation_snapshot": ""})})
    rep = qa_stage.run(p, snapshot=snapshot, manifest_path=manifest_path, labels_path=tmp_path / "labels.parquet", report_path=tmp_path / "qa.json")
    assert rep["gold_annotations"] == n_gold and rep["annotation_checks"]["mark_problems"] == {"missing": 2}
    takes = sorted(a_labels)
    expected = cohen_kappa_score([a_labels[t] for t in takes], [b_labels[t] for t in takes])
    [pair] = rep["agreement"]["cohen_kappa_pairwise"].values()
    assert pair["items"] == 16 and pair["kappa"] == pytest.approx(expected, abs=1e-4)
    labels = pd.read_parquet(tmp_path / "labels.parquet").set_index("take_id")
    marked = labels.drop(index=takes[0])
    assert marked["onset_frame"].between(1, 2).all() and marked["apex_frame"].between(5, 6).all()
    assert labels.loc[takes[0], "status"] == "reannotate" and "no onset/apex mark in 2 of 2" in labels.loc[takes[0], "reasons"]

    queue = labels[labels["status"] == "reannotate"].reset_index()[["take_id"]]
    r = push_reannotation(ls, "mvfer-test", queue, manifest, media_root / "media", media_root, opts)
    assert r["imported"] == len(queue) >= 1 and r["gold"] == 0
    assert "mvfer-test" + REANNOTATION_SUFFIX in {pr.title for pr in projects(ls)}


def test_secrets_on_disk_and_token_rotation(media_root: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(server.PASSWORD_ENV, raising=False)
    data_dir = tmp_path / "ls"
    old, new = secrets.token_hex(20), secrets.token_hex(20)
    caplog.set_level("DEBUG")
    info = server.start(data_dir, media_root, token=old)
    try:
        assert info.password and info.password not in caplog.text  # generated, returned once, never logged
        assert info.password not in (data_dir / "server.log").read_text(errors="replace")
        saved = json.loads((data_dir / "server.json").read_text())
        assert "password" not in saved and old not in json.dumps(saved)
        assert _mode(data_dir) == 0o700
        for f in (data_dir / server.DB_NAME, data_dir / "server.json", data_dir / "server.log"):
            assert _mode(f) == 0o600, f
        ls = client(info.url, old)
        check_token(ls, info.url)
        pw = add_annotator(ls, data_dir / server.DB_NAME, "someone@mvfer.local")
        assert len(pw) >= 12
        with sqlite3.connect(data_dir / server.DB_NAME) as c:  # the annotator got no API token
            assert c.execute("SELECT count(*) FROM authtoken_token").fetchone()[0] == 1
    finally:
        server.stop(data_dir)

    template = server.template_db()
    assert _mode(template) == 0o600 and _mode(template.parent) == 0o700
    with sqlite3.connect(template) as c:  # nothing in the template can log in
        assert c.execute("SELECT count(*) FROM htx_user").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM authtoken_token").fetchone()[0] == 0

    info = server.start(data_dir, media_root, token=new)  # restart with a new token: it, and only it, works
    try:
        assert info.password is None  # the user exists: no new password
        assert _get(info.url + "/api/projects/", new)[0] == 200
        assert _get(info.url + "/api/projects/", old)[0] == 401
        with pytest.raises(server.LabelStudioError, match=r"refused the token in \$LABEL_STUDIO_API_KEY \(401\): export the token"):
            check_token(client(info.url, old), info.url)
    finally:
        server.stop(data_dir)


def test_stop_ends_the_process_group(media_root: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "ls2"
    info = server.start(data_dir, media_root, token=secrets.token_hex(20))
    assert info.url.startswith("http://127.0.0.1:") and server.status(data_dir) is not None
    assert server.stop(data_dir)
    with pytest.raises(ProcessLookupError):
        os.killpg(info.pid, 0)
    assert server.status(data_dir) is None and not server.stop(data_dir)


def test_start_without_a_token_says_how_to_set_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    with pytest.raises(server.LabelStudioError, match=r"set \$LABEL_STUDIO_API_KEY"):
        server.start(tmp_path / "x", tmp_path)


def test_cli_refused_token_is_one_line_and_add_annotator_prints_a_password(live, monkeypatch, capsys, caplog) -> None:
    from pipeline.cli import main

    info, _, data_dir, token = live
    monkeypatch.setenv(server.TOKEN_ENV, "0" * 40)
    assert main(["annotate", "pull", "--url", info.url]) == 1
    [err] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "refused the token in $LABEL_STUDIO_API_KEY (401)" in err.getMessage() and err.exc_info is None
    assert "Traceback" not in capsys.readouterr().err

    monkeypatch.setenv(server.TOKEN_ENV, token)
    assert main(["labelstudio", "add-annotator", "cli-annotator@mvfer.local", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"cli-annotator@mvfer.local can log in at {info.url}/user/login/ with the one-time password ")
    assert main(["labelstudio", "add-annotator", "not-an-email", "--data-dir", str(data_dir)]) == 1
