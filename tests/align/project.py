"""A project folder for the align stage: Layout(tmp), the tests' params, a raw capture and its manifest.

Shells run in process on `Layout(root)` (`stage.run` / `invoke`) or as `python -m pipeline.align.stage`
with `MVFER_ROOT` set to the root; nothing is patched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.align import stage
from pipeline.ingest.run import ingest
from pipeline.layout import Layout
from pipeline.params import Params

REPO = Path(__file__).resolve().parents[2]
CPU_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def with_raw(params: Params, raw: Path, **align: Any) -> Params:
    """`params` reading `raw`, with one local worker unless `align` says otherwise."""
    a = params.align.model_copy(update={"workers": 1, **align})
    return params.model_copy(update={"ingest": params.ingest.model_copy(update={"raw_dir": str(raw)}), "align": a})


def manifest_of(params: Params, raw: Path) -> pd.DataFrame:
    """The manifest ingest makes of `raw` (ingest itself is tested in tests/ingest)."""
    one = params.model_copy(update={"ingest": params.ingest.model_copy(update={"workers": 1})})
    manifest, _ = ingest(one, raw)
    return manifest


class Project:
    """A project root: params.yaml, data/interim/manifest.parquet, and the stage's outputs under `layout`."""

    def __init__(self, root: Path, raw: Path, params: Params, manifest: pd.DataFrame | None = None) -> None:
        self.layout = Layout(root)
        self.raw = raw
        self.params = with_raw(params, raw)
        root.mkdir(parents=True, exist_ok=True)
        self.layout.params_file.write_text(
            yaml.safe_dump(self.params.model_dump(by_alias=True, mode="json"), sort_keys=False)
        )
        self.save(manifest if manifest is not None else manifest_of(self.params, raw))

    @property
    def out(self) -> Path:
        return self.layout.aligned

    def save(self, manifest: pd.DataFrame) -> None:
        self.layout.interim.mkdir(parents=True, exist_ok=True)
        manifest.to_parquet(self.layout.manifest, index=False)

    def reingest(self) -> None:
        self.save(manifest_of(self.params, self.raw))

    def with_align(self, **align: Any) -> Params:
        """Params with these align keys; `executor` and `dask_scheduler` go to the shared executor section."""
        shared = {k: align.pop(k) for k in ("executor", "dask_scheduler") if k in align}
        executor = self.params.executor.model_copy(update={"kind": shared["executor"]} if "executor" in shared else {})
        if "dask_scheduler" in shared:
            executor = executor.model_copy(update={"dask_scheduler": shared["dask_scheduler"]})
        return self.params.model_copy(
            update={"align": self.params.align.model_copy(update=align), "executor": executor}
        )

    def run(self, **align: Any) -> dict:
        """Run the shell in process; the report it wrote."""
        stage.run(self.layout, self.with_align(**align))
        return json.loads(self.layout.align_report.read_text())

    def takes(self) -> pd.DataFrame:
        return pd.read_parquet(self.layout.align_takes).set_index("take_id")

    def aligned_bytes(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.out.glob("*.npz"))}


def child_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a stage run in a child process on `root` (no CPU code-path overrides inherited)."""
    env = {k: v for k, v in os.environ.items() if k not in CPU_ENV}
    return env | {"MVFER_ROOT": str(root), "PYTHONPATH": str(REPO)} | extra


def align_cmd() -> list[str]:
    return [sys.executable, "-m", "pipeline.align.stage"]


def run_align(root: Path, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m pipeline.align.stage` on `root`, as dvc runs it."""
    proc = subprocess.run(
        align_cmd(), cwd=root, env=child_env(root, **extra_env), capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"align failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc
