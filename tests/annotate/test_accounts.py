"""Accounts and the token check without a server: an unreachable server and a missing database are
one-line errors, and add-annotator never touches a server this checkout did not start."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from pipeline.annotate import server
from pipeline.annotate.accounts import add_annotator, check_token
from pipeline.cli import main


def _closed_url() -> str:
    return f"http://127.0.0.1:{server.free_port()}"  # nothing listens there


def _one_error(caplog: pytest.LogCaptureFixture) -> str:
    [err] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert err.exc_info is None
    return err.getMessage()


def test_an_unreachable_server_is_a_labelstudio_error() -> None:
    def whoami():
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(
        server.LabelStudioError, match=r"cannot reach Label Studio at http://x:1 \(\[Errno 111\] Connection refused\)"
    ):
        check_token(SimpleNamespace(users=SimpleNamespace(whoami=whoami)), "http://x:1")


def test_cli_pull_from_an_unreachable_server_is_one_line(monkeypatch, caplog, capsys) -> None:
    monkeypatch.setenv(server.TOKEN_ENV, "0" * 40)
    url = _closed_url()
    assert main(["annotate", "pull", "--url", url]) == 1
    assert _one_error(caplog).startswith(f"cannot reach Label Studio at {url}")
    assert "Traceback" not in capsys.readouterr().err


def test_add_annotator_needs_the_servers_database_and_never_creates_one(tmp_path: Path) -> None:
    created = []
    ls = SimpleNamespace(users=SimpleNamespace(list=lambda: [], create=lambda **kw: created.append(kw)))
    db = tmp_path / server.DB_NAME
    with pytest.raises(server.LabelStudioError, match=r"label_studio\.sqlite3: no Label Studio database here"):
        add_annotator(ls, db, "ana@lab.example")
    assert not db.exists() and created == []  # no empty database left, no account made on the server


def test_cli_add_annotator_refuses_a_server_it_did_not_start(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv(server.TOKEN_ENV, "0" * 40)
    url = _closed_url()
    assert main(["labelstudio", "add-annotator", "ana@lab.example", "--url", url, "--data-dir", str(tmp_path)]) == 1
    assert (
        "add-annotator works only on a running server started from" in _one_error(caplog)
        and f"--url {url} is not it" in caplog.text
    )
    assert list(tmp_path.iterdir()) == []  # before: an empty label_studio.sqlite3 appeared here


def test_cli_add_annotator_refuses_another_url_than_its_own_server(tmp_path: Path, monkeypatch, caplog) -> None:
    own = server.ServerInfo(
        pid=1, port=8081, url="http://127.0.0.1:8081", data_dir=str(tmp_path), media_root=str(tmp_path), version="x"
    )
    monkeypatch.setattr(server, "status", lambda data_dir: own)
    monkeypatch.setenv(server.TOKEN_ENV, "0" * 40)
    assert (
        main(
            [
                "labelstudio",
                "add-annotator",
                "ana@lab.example",
                "--url",
                "http://127.0.0.1:9",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "--url http://127.0.0.1:9 is not it" in _one_error(caplog) and list(tmp_path.iterdir()) == []


def _db_with_one_annotator(path: Path) -> Path:
    """The tables pull reads, as Label Studio lays them out: an admin, an annotator and their organizations."""
    import sqlite3

    with sqlite3.connect(path) as c:
        c.execute(
            "CREATE TABLE htx_user (id INTEGER PRIMARY KEY, email TEXT, is_superuser BOOL, active_organization_id INT)"
        )
        c.execute("CREATE TABLE organization (id INTEGER PRIMARY KEY, title TEXT, created_by_id INT)")
        c.execute(
            "CREATE TABLE organizations_organizationmember (id INTEGER PRIMARY KEY, organization_id INT, user_id INT, "
            "deleted_at TEXT)"
        )
        c.executemany("INSERT INTO htx_user VALUES (?, ?, ?, ?)", [(1, "admin@x", 1, 1), (2, "ana@lab.example", 0, 2)])
        c.executemany(
            "INSERT INTO organization VALUES (?, ?, ?)",
            [(1, "Label Studio", 1), (2, "mvfer annotator ana@lab.example", 2)],
        )
    return path


def test_pull_when_the_server_dies_is_one_line_and_leaves_the_snapshot(tmp_path: Path) -> None:
    from pipeline.annotate.export import LabelConfig
    from pipeline.annotate.sync import PullError, pull

    db = _db_with_one_annotator(tmp_path / server.DB_NAME)
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text('[{"id": 1}]')

    def dies(**kw):
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    project = SimpleNamespace(title="mvfer", id=7)
    pager = SimpleNamespace(items=[project], response=SimpleNamespace(count=1))
    ls = SimpleNamespace(projects=SimpleNamespace(list=lambda **kw: pager), tasks=SimpleNamespace(list=dies))
    config = LabelConfig.load(Path(__file__).resolve().parents[2] / "annotations" / "labeling_config.xml")
    with pytest.raises(PullError) as e:
        pull(
            ls,
            db,
            "mvfer",
            {"t"},
            config,
            exports_dir=tmp_path / "exports",
            snapshot=snapshot,
            url="http://127.0.0.1:1",
        )
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "pull did not happen: Label Studio at http://127.0.0.1:1 stopped answering"
    )
    assert "RemoteProtocolError" in msg and f"{snapshot} is unchanged" in msg and "mvfer labelstudio start" in msg
    assert snapshot.read_text() == '[{"id": 1}]' and not (tmp_path / "exports").exists()
    import sqlite3

    with sqlite3.connect(db) as c:  # the admin acts in its own organization again
        assert c.execute("SELECT active_organization_id FROM htx_user WHERE id = 1").fetchone()[0] == 1
