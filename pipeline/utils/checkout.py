"""A fresh copy of a checkout of this project (what `git clone` would give, plus files not yet committed).

Why: the integration tests and the walk-through benchmark (scripts/bench_recordings.py) run `dvc repro` in a
temporary project, never in the working checkout; they copy it through this one helper. Not part of any stage.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

STALE = ("dvc.lock", "data/raw", "data/interim", "reports")  # outputs of the checkout's own run


def copy_checkout(repo: Path, dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of `repo` into `dest`, without its outputs."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for f in filter(None, files):
        if (repo / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / f, dest / f)
    for stale in STALE:
        path = dest / stale
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return dest
