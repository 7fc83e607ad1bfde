"""A private MVFER_ROOT for running `mvfer align run` as a real subprocess on the tiny capture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline import paths
from pipeline.ingest.run import ingest
from pipeline.params import load_params

REPO = Path(__file__).resolve().parents[2]


def make_root(root: Path, raw: Path, **align: object) -> Path:
    """params.yaml (raw_dir pointing at `raw`, align overrides) and an ingested manifest under `root`."""
    cfg = yaml.safe_load(paths.PARAMS_FILE.read_text())
    cfg["ingest"]["raw_dir"] = str(raw)
    cfg["align"].update({"workers": 1, **align})
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    manifest, _ = ingest(load_params(root / "params.yaml"), raw)
    (root / "data" / "interim").mkdir(parents=True, exist_ok=True)
    manifest.to_parquet(root / "data" / "interim" / "manifest.parquet", index=False)
    return root


def align_cmd() -> list[str]:
    return [sys.executable, "-m", "pipeline", "align", "run"]


def child_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")}
    return env | {"MVFER_ROOT": str(root), "PYTHONPATH": str(REPO)} | extra


def run_align(root: Path, **extra_env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(align_cmd(), cwd=REPO, env=child_env(root, **extra_env), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"mvfer align run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def aligned_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "data" / "aligned").glob("*.npz"))}
