"""What machine and which code measured a figure: the one place reports and benchmarks ask.

Why: a timing is only comparable with another of the same CPU, and only reproducible at a known commit;
every report's provenance block and every benchmark script records both the same way.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(**extra: Any) -> dict[str, Any]:
    """CPU model, architecture, cores and system, plus any `extra` fields a caller measures (a GPU, python)."""
    return {
        "cpu": cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "system": platform.system(),
        **extra,
    }


def git_commit(root: Path, *paths: str) -> str | None:
    """HEAD of the checkout at `root`, with `+dirty` when tracked files under `paths` (all when none) differ.

    `--no-optional-locks`: asking never writes the index, so a benchmark beside other work disturbs nothing.
    None outside a git checkout.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--", *paths],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
