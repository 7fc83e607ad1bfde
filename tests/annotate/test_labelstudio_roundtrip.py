"""A real Label Studio on loopback: push (idempotent), two annotators, pull, QA, stop by process group."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from pipeline import paths
from pipeline.annotate import server
from pipeline.annotate.sync import REANNOTATION_SUFFIX, client, pull, push, push_reannotation
from pipeline.ingest.run import ingest
from pipeline.params import Params
from pipeline.qa import stage as qa_stage

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (server.LS_VENV / "bin" / "label-studio").exists(), reason="Label Studio not installed (make labelstudio)"),
]


TOKENS: dict[Path, str] = {}


def ls_token(data_dir: Path) -> str:
    return TOKENS[data_dir]


@pytest.fixture(scope="module")
def live(tiny_raw: Path, tmp_path_factory: pytest.TempPathFactory):
    token = secrets.token_hex(20)
    data_dir = tmp_path_factory.mktemp("ls")
    TOKENS[data_dir] = token
    info = server.start(data_dir, tiny_raw.parent, token=token)
    try:
        yield info, client(info.url, token), data_dir
    finally:
        server.stop(data_dir)


def _result(label: str, onset: int, apex: int) -> list[dict]:
    return [{"from_name": "expression", "to_name": "video", "type": "choices", "value": {"choices": [label]}},
            {"from_name": "onset_frame", "to_name": "video", "type": "number", "value": {"number": onset}},
            {"from_name": "apex_frame", "to_name": "video", "type": "number", "value": {"number": apex}}]


def test_server_binds_loopback_only(live) -> None:
    info, _, _ = live
    assert info.url.startswith("http://127.0.0.1:")
    assert server.status(Path(info.data_dir)) is not None


def test_round_trip(live, tiny_raw: Path, params: Params, tmp_path: Path, monkeypatch) -> None:
    info, ls, data_dir = live
    manifest, _ = ingest(params, tiny_raw)
    first = push(ls, "mvfer-test", manifest, tiny_raw, tiny_raw.parent)
    assert first["imported"] == 16
    again = push(ls, "mvfer-test", manifest, tiny_raw, tiny_raw.parent)
    assert again["imported"] == 0 and again["already_present"] == 16  # idempotent
    pid = first["project_id"]
    tasks = list(ls.tasks.list(project=pid, fields="all"))
    assert tasks[0].data["video"].startswith("/data/local-files/?d=raw/takes/")
    import urllib.request

    req = urllib.request.Request(info.url + tasks[0].data["video"], headers={"Authorization": f"Token {ls_token(data_dir)}"})
    with urllib.request.urlopen(req, timeout=10) as r:  # the media is served from the registered storage
        assert r.status == 200 and r.read(12)[4:8] == b"ftyp"

    other = ls.users.create(username="annotator2", email="annotator2@mvfer.local", password=secrets.token_urlsafe(10))
    rng = np.random.default_rng(0)
    a_labels, b_labels = {}, {}
    for t in tasks:
        take, prompted = t.data["take_id"], t.data["prompted_expression"]
        a_labels[take] = prompted
        b_labels[take] = prompted if rng.random() < 0.75 else ("fear" if prompted != "fear" else "anger")
        ls.annotations.create(id=t.id, result=_result(a_labels[take], 1, 5), lead_time=20.0)
        ls.annotations.create(id=t.id, result=_result(b_labels[take], 2, 6), completed_by=other.id, lead_time=15.0)
    ls.annotations.create(id=tasks[0].id, result=[], was_cancelled=True, completed_by=other.id)

    monkeypatch.setattr(paths, "REANNOTATION_QUEUE", tmp_path / "queue.csv")
    monkeypatch.setattr(paths, "QA_MARKDOWN", tmp_path / "qa.md")
    monkeypatch.setattr(paths, "PLOTS", tmp_path / "plots")
    snapshot = tmp_path / "snapshot.json"
    summary = pull(ls, "mvfer-test", set(manifest["take_id"]), exports_dir=tmp_path / "exports", snapshot=snapshot)
    assert summary["tasks"] == 16 and summary["annotations_usable"] == 32
    assert summary["excluded"].get("cancelled_or_skipped") == 1
    assert len(list((tmp_path / "exports").glob("export-*.json"))) == 1
    assert json.loads(snapshot.read_text())[0]["annotations"]

    manifest_path = tmp_path / "manifest.parquet"
    manifest.to_parquet(manifest_path, index=False)
    p = params.model_copy(update={"qa": params.qa.model_copy(update={"truth": str(tiny_raw / "_truth" / "takes.csv")})})
    rep = qa_stage.run(p, snapshot=snapshot, manifest_path=manifest_path, labels_path=tmp_path / "labels.parquet", report_path=tmp_path / "qa.json")
    takes = sorted(a_labels)
    expected = cohen_kappa_score([a_labels[t] for t in takes], [b_labels[t] for t in takes])
    [pair] = rep["agreement"]["cohen_kappa_pairwise"].values()
    assert pair["items"] == 16 and pair["kappa"] == pytest.approx(expected, abs=1e-4)
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert (labels["n_annotations"] == 2).all()
    assert labels["onset_frame"].between(1, 2).all() and labels["apex_frame"].between(5, 6).all()

    queue = labels[labels["status"] == "reannotate"][["take_id"]]
    if len(queue):
        r = push_reannotation(ls, "mvfer-test", queue, manifest, tiny_raw, tiny_raw.parent)
        assert r["imported"] == len(queue)
        names = {pr.title for pr in ls.projects.list()}
        assert "mvfer-test" + REANNOTATION_SUFFIX in names


def test_stop_ends_the_process_group(tiny_raw: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "ls2"
    info = server.start(data_dir, tiny_raw.parent, token=secrets.token_hex(20))
    assert server.stop(data_dir)
    with pytest.raises(ProcessLookupError):
        os.killpg(info.pid, 0)
    assert server.status(data_dir) is None and not server.stop(data_dir)


def test_start_without_a_token_says_how_to_set_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(server.TOKEN_ENV, raising=False)
    with pytest.raises(server.LabelStudioError, match=r"set \$LABEL_STUDIO_API_KEY"):
        server.start(tmp_path / "x", tmp_path)
