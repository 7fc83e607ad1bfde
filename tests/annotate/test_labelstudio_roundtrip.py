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

from pipeline.annotate import server
from pipeline.annotate.accounts import acting_in, add_annotator, admin_org, annotator_orgs, check_token
from pipeline.annotate.export import LabelConfig
from pipeline.annotate.sync import (
    REANNOTATION_SUFFIX,
    PushError,
    PushOptions,
    answered_by,
    client,
    load_gold,
    marks_result,
    projects,
    pull,
    push,
    push_reannotation,
)
from pipeline.layout import Layout
from pipeline.params import Params
from pipeline.qa import stage as qa_stage

pytestmark = pytest.mark.integration
CONFIG_XML = Path(__file__).resolve().parents[2] / "annotations" / "labeling_config.xml"


def _get(url: str, token: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_round_trip(
    live, tiny_raw: Path, tiny_manifest: pd.DataFrame, media_root: Path, params: Params, tmp_path: Path
) -> None:
    info, ls, data_dir, token = live
    db = data_dir / server.DB_NAME
    manifest = tiny_manifest
    n_frames = dict(zip(manifest["take_id"], manifest["n_frames"].astype(int)))
    with pytest.raises(PushError, match="no annotator accounts yet"):
        push(ls, db, "mvfer-test", manifest, media_root / "media", media_root, CONFIG_XML.read_text())
    uids = {}
    for email in ("ann2@mvfer.local", "ann3@mvfer.local"):
        add_annotator(ls, db, email)
    orgs = {e: (o, u) for o, e, u in annotator_orgs(db)}
    opts = PushOptions(overlap=2, seed=0)
    first = push(ls, db, "mvfer-test", manifest, media_root / "media", media_root, CONFIG_XML.read_text(), opts)
    assert first["imported"] == 32 and all(v["imported"] == 16 for v in first["annotators"].values())
    again = push(ls, db, "mvfer-test", manifest, media_root / "media", media_root, CONFIG_XML.read_text(), opts)
    assert again["imported"] == 0 and again["already_present"] == 32  # idempotent
    assert {p.title for p in projects(ls)} == set()  # the admin's own organization holds no annotator's project

    a_labels, b_labels = {}, {}
    prompted = manifest.set_index("take_id")["prompted_expression"]
    for who, (org, uid) in orgs.items():
        uids[who] = uid
        with acting_in(db, org):
            pid = first["annotators"][who]["project_id"]
            project = ls.projects.get(id=pid)
            assert project.maximum_annotations == 1 and project.show_instruction
            tasks = sorted(
                ls.tasks.list(project=pid, fields="all", page_size=100).items, key=lambda t: t.data["take_id"]
            )
            assert all(t.total_annotations == 0 for t in tasks)  # no gold answer stored in Label Studio
            if who == "ann2@mvfer.local":
                status, body = _get(info.url + tasks[0].data["video"], token)  # the proxy is served, and it decodes
                assert status == 200
                (tmp_path / "served.mp4").write_bytes(body)
                with av.open(str(tmp_path / "served.mp4")) as c:
                    assert c.streams.video[0].codec_context.name == "h264"
                    assert sum(1 for _ in c.decode(video=0)) == n_frames[tasks[0].data["take_id"]]
            for k, t in enumerate(tasks):
                take = t.data["take_id"]
                unmarked = k == 0  # both leave the first take without marks: QA must queue it
                if who == "ann2@mvfer.local":
                    a_labels[take] = label = prompted[take]
                    frames = (1, 5)
                else:
                    b_labels[take] = label = (
                        prompted[take] if k % 4 else ("fear" if prompted[take] != "fear" else "anger")
                    )
                    frames = (2, 6)
                ls.annotations.create(
                    id=t.id,
                    result=marks_result(label, *((None, None) if unmarked else frames)),
                    completed_by=uid,
                    lead_time=20.0,
                )
            if who == "ann3@mvfer.local":
                ls.annotations.create(id=tasks[1].id, result=[], was_cancelled=True, completed_by=uid)

    layout = Layout(tmp_path / "project")
    layout.interim.mkdir(parents=True)
    manifest.to_parquet(layout.manifest, index=False)
    layout.annotations.mkdir()
    layout.label_config.write_text(CONFIG_XML.read_text())
    gold = load_gold(tiny_raw / "_truth" / "takes.csv")
    summary = pull(
        ls,
        db,
        "mvfer-test",
        set(manifest["take_id"]),
        LabelConfig.load(layout.label_config),
        exports_dir=layout.annotation_exports,
        snapshot=layout.annotation_snapshot,
        n_frames=n_frames,
        gold=gold,
        gold_fraction=0.25,
        seed=0,
        gold_source="data/raw/_truth/takes.csv",
    )
    n_gold = summary["gold_added"]
    assert 0 < n_gold < 16 and summary["projects"] == 2
    assert (
        summary["tasks"] == 32
        and summary["annotations_usable"] == 32 + n_gold
        and summary["gold_annotations"] == n_gold
    )
    assert summary["excluded"].get("cancelled_or_skipped") == 1 and summary["mark_problems"] == {"missing": 2}
    assert summary["annotators"] == 2 and len(list(layout.annotation_exports.glob("export-*.json"))) == 1
    assert "Invalid page" not in (data_dir / "server.log").read_text(errors="replace")  # no request past the last page
    with sqlite3.connect(db) as c:  # push and pull leave the admin in its own organization
        assert c.execute("SELECT active_organization_id FROM htx_user WHERE is_superuser = 1").fetchone()[
            0
        ] == admin_org(db)

    p = params.model_copy(
        update={
            "qa": params.qa.model_copy(
                update={
                    "snapshot": str(layout.annotation_snapshot),
                    "truth": str(tiny_raw / "_truth" / "takes.csv"),
                    "reannotation_snapshot": "",
                }
            )
        }
    )
    rep = qa_stage.run(layout, p)
    assert rep["gold_annotations"] == n_gold and rep["annotation_checks"]["mark_problems"] == {"missing": 2}
    assert {a["annotator"] for a in rep["annotators"]} == {"ann2@mvfer.local", "ann3@mvfer.local"}  # by account
    takes = sorted(a_labels)
    expected = cohen_kappa_score([a_labels[t] for t in takes], [b_labels[t] for t in takes])
    [pair] = rep["agreement"]["cohen_kappa_pairwise"].values()
    assert pair["items"] == 16 and pair["kappa"] == pytest.approx(expected, abs=1e-4)
    labels = pd.read_parquet(layout.labels).set_index("take_id")
    gold_takes = labels.index[labels["source"] == "gold"]
    marked = labels.drop(index=[takes[0], *gold_takes], errors="ignore")
    assert (
        marked["onset_frame"].eq(1).all() and marked["apex_frame"].eq(5).all()
    )  # median of (1, 2) and (5, 6): the lower
    for t in gold_takes:  # gold items carry the expert's frames
        g = gold[t]
        if g.get("apex_frame") is not None and g["apex_frame"] >= 0:
            assert labels.loc[t, "apex_frame"] == g["apex_frame"]
    assert labels.loc[takes[0], "status"] == "reannotate"
    assert "no onset/apex mark in 2 of 2" in labels.loc[takes[0], "reasons"] or takes[0] in gold_takes
    assert "## Mark problems" in layout.qa_markdown.read_text() and "ann2@mvfer.local" in layout.qa_markdown.read_text()

    queue = labels[labels["status"] == "reannotate"].reset_index()[["take_id"]]
    add_annotator(ls, db, "ann4@mvfer.local")  # a fresh annotator: the queue (1-1 ties included) goes to them only
    answered = answered_by(json.loads(layout.annotation_snapshot.read_text()))
    r = push_reannotation(
        ls,
        db,
        "mvfer-test",
        queue,
        manifest,
        media_root / "media",
        media_root,
        CONFIG_XML.read_text(),
        opts,
        answered=answered,
    )
    assert r["imported"] == len(queue) >= 1 and r["annotators"]["ann4@mvfer.local"]["imported"] == len(queue)
    with acting_in(db, orgs["ann2@mvfer.local"][0]):
        assert "mvfer-test" + REANNOTATION_SUFFIX in {pr.title for pr in projects(ls)}


def test_secrets_on_disk_and_token_rotation(media_root: Path, ls_home: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(server.PASSWORD_ENV, raising=False)
    data_dir = ls_home / "secrets"  # beside the session's template
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

    template = server.template_db(server.templates_dir(data_dir))
    assert _mode(template) == 0o600 and _mode(template.parent) == 0o700
    with sqlite3.connect(template) as c:  # nothing in the template can log in
        assert c.execute("SELECT count(*) FROM htx_user").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM authtoken_token").fetchone()[0] == 0

    info = server.start(data_dir, media_root, token=new)  # restart with a new token: it, and only it, works
    try:
        assert info.password is None  # the user exists: no new password
        assert _get(info.url + "/api/projects/", new)[0] == 200
        assert _get(info.url + "/api/projects/", old)[0] == 401
        with pytest.raises(
            server.LabelStudioError, match=r"refused the token in \$LABEL_STUDIO_API_KEY \(401\): export the token"
        ):
            check_token(client(info.url, old), info.url)
    finally:
        server.stop(data_dir)


def test_stop_ends_the_process_group(media_root: Path, ls_home: Path) -> None:
    data_dir = ls_home / "stop"
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
    assert len(out) == 1 and out[0].startswith(
        f"cli-annotator@mvfer.local can log in at {info.url}/user/login/ with the one-time password "
    )
    assert main(["labelstudio", "add-annotator", "not-an-email", "--data-dir", str(data_dir)]) == 1
