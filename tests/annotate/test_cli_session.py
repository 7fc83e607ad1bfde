"""The commands README gives an annotation lead, run as a user would (subprocesses in a temporary
project root): start (password printed once), add-annotator, push (proxies; each annotator their own
project), pull (one summary line, gold added from mvfer's file), status, stop."""

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

from pipeline.annotate import server

pytestmark = pytest.mark.integration


def _mvfer(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )


ROOT = Path(__file__).resolve().parents[2]


def test_lead_session_through_the_cli(
    tmp_path: Path, tiny_raw: Path, tiny_manifest: pd.DataFrame, media_root: Path, ls_home: Path
) -> None:
    root = tmp_path / "project"
    (root / "data" / "interim").mkdir(parents=True)
    shutil.copyfile(ROOT / "tests" / "params.test.yaml", root / "params.yaml")
    shutil.copytree(
        ROOT / "annotations", root / "annotations", ignore=shutil.ignore_patterns("exports", "snapshot.json")
    )
    (root / "docs").mkdir()
    shutil.copyfile(ROOT / "docs" / "annotator-guide.md", root / "docs" / "annotator-guide.md")
    (root / ".venv-ls").symlink_to(server.LS_VENV)
    (root / "data" / "raw").symlink_to(tiny_raw)  # gold answers: data/raw/_truth/takes.csv (annotate.gold_truth)
    shutil.copytree(media_root / "media", root / "data" / "media")
    tiny_manifest.to_parquet(root / "data" / "interim" / "manifest.parquet", index=False)
    templates = server.private_dir(server.private_dir(root / ".labelstudio") / "templates")
    template = server.template_db(ls_home / "templates")  # the session's: no 40 s rebuild
    shutil.copy2(template, templates / template.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "MVFER_"))}
    env |= {"MVFER_ROOT": str(root), server.TOKEN_ENV: secrets.token_hex(20)}

    start = _mvfer(root, env, "labelstudio", "start")
    try:
        assert start.returncode == 0, start.stderr
        lines = start.stdout.strip().splitlines()
        assert len(lines) == 2 and "one-time password" in lines[1]
        password = lines[1].split("one-time password ")[1].split()[0]
        assert password not in start.stderr  # printed once on the terminal, never logged
        early = _mvfer(root, env, "annotate", "push")  # nobody to give tasks to yet: one line saying what to do
        assert early.returncode == 1 and "add-annotator" in early.stderr and "Traceback" not in early.stderr
        add = _mvfer(root, env, "labelstudio", "add-annotator", "ana@lab.example")
        assert add.returncode == 0 and "ana@lab.example can log in at http://127.0.0.1:" in add.stdout, add.stderr
        push = _mvfer(root, env, "annotate", "push")
        assert push.returncode == 0, push.stderr
        res = json.loads(push.stdout.split("push: ", 1)[1])
        assert res["imported"] == 16 and res["overlap"] == 3 and res["prefill"] == "none" and res["skipped"] == {}
        pull = _mvfer(root, env, "annotate", "pull")
        assert pull.returncode == 0, pull.stderr
        [line] = pull.stdout.strip().splitlines()
        gold = json.loads((root / "annotations" / "snapshot.json").read_text())
        n_gold = sum(1 for t in gold for a in t.get("annotations") or [] if a.get("mvfer_gold"))
        assert line.startswith(f"pulled 16 tasks: {n_gold} usable annotations by 0 annotators ({n_gold} gold")
        assert (root / "annotations" / "snapshot.json").exists() and len(
            list((root / "annotations" / "exports").glob("*.json"))
        ) == 1
        assert _mvfer(root, env, "labelstudio", "status").returncode == 0
    finally:
        stop = _mvfer(root, env, "labelstudio", "stop")
    assert stop.stdout.strip() == "stopped" and _mvfer(root, env, "labelstudio", "status").returncode == 3
