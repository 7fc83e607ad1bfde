"""The commands README gives an annotation lead, run as a user would (subprocesses in a temporary
project root): start (password printed once), push (proxies, gold), add-annotator, pull (one summary
line), status, stop."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import paths
from pipeline.annotate import server

pytestmark = pytest.mark.integration


def _mvfer(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=root, env=env, capture_output=True, text=True, timeout=240)


def test_lead_session_through_the_cli(tmp_path: Path, tiny_raw: Path, tiny_manifest: pd.DataFrame, media_root: Path) -> None:
    root = tmp_path / "project"
    (root / "data" / "interim").mkdir(parents=True)
    shutil.copyfile(paths.PARAMS_FILE, root / "params.yaml")
    shutil.copytree(paths.ANNOTATIONS, root / "annotations", ignore=shutil.ignore_patterns("exports", "snapshot.json"))
    (root / ".venv-ls").symlink_to(server.LS_VENV)
    (root / "data" / "raw").symlink_to(tiny_raw)  # gold answers: data/raw/_truth/takes.csv (annotate.gold_truth)
    shutil.copytree(media_root / "media", root / "data" / "media")
    tiny_manifest.to_parquet(root / "data" / "interim" / "manifest.parquet", index=False)
    templates = server.private_dir(server.private_dir(root / ".labelstudio") / "templates")
    shutil.copy2(server.template_db(), templates / server.template_db().name)  # no 40 s rebuild
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "MVFER_"))}
    env |= {"MVFER_ROOT": str(root), server.TOKEN_ENV: secrets.token_hex(20)}

    start = _mvfer(root, env, "labelstudio", "start")
    try:
        assert start.returncode == 0, start.stderr
        lines = start.stdout.strip().splitlines()
        assert len(lines) == 2 and "one-time password" in lines[1]
        password = lines[1].split("one-time password ")[1].split()[0]
        assert password not in start.stderr  # printed once on the terminal, never logged
        push = _mvfer(root, env, "annotate", "push")
        assert push.returncode == 0, push.stderr
        res = json.loads(push.stdout.split("push: ", 1)[1])
        assert res["imported"] == 16 and res["overlap"] == 3 and res["prefill"] == "none" and res["skipped"] == {}
        add = _mvfer(root, env, "labelstudio", "add-annotator", "ana@lab.example")
        assert add.returncode == 0 and "ana@lab.example can log in at http://127.0.0.1:" in add.stdout, add.stderr
        pull = _mvfer(root, env, "annotate", "pull")
        assert pull.returncode == 0, pull.stderr
        [line] = pull.stdout.strip().splitlines()
        assert line.startswith(f"pulled 16 tasks: {res['gold']} usable annotations by {min(res['gold'], 1)} annotators ({res['gold']} gold)")
        assert (root / "annotations" / "snapshot.json").exists() and len(list((root / "annotations" / "exports").glob("*.json"))) == 1
        assert _mvfer(root, env, "labelstudio", "status").returncode == 0
    finally:
        stop = _mvfer(root, env, "labelstudio", "stop")
    assert stop.stdout.strip() == "stopped" and _mvfer(root, env, "labelstudio", "status").returncode == 3
