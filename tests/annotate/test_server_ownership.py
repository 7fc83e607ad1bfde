"""start/stop act only on the server this data folder started (no Label Studio needed: a sleeping
process stands in for one, in the data folder as `_launch` starts it, or elsewhere as a pid that a
stale server.json names after the system gave it to something else)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.annotate import server


@pytest.fixture
def sleeper(tmp_path: Path):
    """Start a sleeping process group in a given folder; every one is killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(cwd: Path) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        procs.append(
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], cwd=cwd, start_new_session=True)
        )
        return procs[-1]

    yield start
    for p in procs:
        p.kill()
        p.wait()


def _server_json(data_dir: Path, pid: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = server.free_port()
    (data_dir / "server.json").write_text(
        json.dumps(
            {
                "pid": pid,
                "port": port,
                "url": f"http://127.0.0.1:{port}",
                "data_dir": str(data_dir),
                "media_root": str(data_dir),
                "version": "test",
            }
        )
    )


def _no_launch(monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("a server was launched")

    monkeypatch.setattr(server, "_launch", boom)
    monkeypatch.setattr(server, "template_db", boom)


def test_start_refuses_while_its_server_runs(tmp_path: Path, sleeper, monkeypatch) -> None:
    data_dir = tmp_path / "ls"
    running = sleeper(data_dir)
    _server_json(data_dir, running.pid)
    _no_launch(monkeypatch)
    with pytest.raises(
        server.LabelStudioError,
        match=rf"already running at http://127\.0\.0\.1:\d+ \(pid {running.pid}\); stop it first",
    ):
        server.start(data_dir, tmp_path, token="t" * 40)
    assert running.poll() is None and json.loads((data_dir / "server.json").read_text())["pid"] == running.pid


def test_stop_leaves_a_process_that_a_stale_server_json_names(tmp_path: Path, sleeper, caplog) -> None:
    data_dir = tmp_path / "ls"
    stranger = sleeper(tmp_path / "elsewhere")
    _server_json(data_dir, stranger.pid)
    assert server.status(data_dir) is None
    assert server.stop(data_dir) is False
    assert stranger.poll() is None and "not a Label Studio started from" in caplog.text
    assert not (data_dir / "server.json").exists()


def test_stop_ends_the_group_it_started(tmp_path: Path, sleeper) -> None:
    data_dir = tmp_path / "ls"
    ours = sleeper(data_dir)
    _server_json(data_dir, ours.pid)
    assert server.stop(data_dir) is True
    assert ours.wait(timeout=30) is not None and not (data_dir / "server.json").exists()


def test_start_replaces_an_empty_database_with_the_template(tmp_path: Path, monkeypatch) -> None:
    template = tmp_path / "template.sqlite3"
    with sqlite3.connect(template) as c:
        c.execute("CREATE TABLE htx_user (id INTEGER PRIMARY KEY, email TEXT)")
    data_dir = tmp_path / "ls"
    data_dir.mkdir()
    (data_dir / server.DB_NAME).touch()  # what a stray sqlite3.connect left
    monkeypatch.setattr(server, "template_db", lambda cache, venv: template)

    def launched(*a, **k):
        raise RuntimeError("launched")

    monkeypatch.setattr(server, "_launch", launched)
    with pytest.raises(RuntimeError, match="launched"):
        server.start(data_dir, tmp_path, token="t" * 40)
    assert (data_dir / server.DB_NAME).read_bytes() == template.read_bytes()
