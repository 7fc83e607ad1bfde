"""Fixtures of the capture tests: the tiny capture aligned once (capture_verify reads align's detections)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.align import stage as align_stage
from pipeline.layout import Layout
from pipeline.params import Params
from tests.align.project import Project


@pytest.fixture(scope="session")
def tiny_aligned(tiny_raw: Path, params: Params, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project whose data/raw is the tiny capture and whose data/aligned is what align made of it."""
    root = tmp_path_factory.mktemp("aligned") / "root"
    raw = root / "data" / "raw"
    shutil.copytree(tiny_raw, raw)
    project = Project(root, raw, params)
    align_stage.run(project.layout, project.params)
    return project


@pytest.fixture
def aligned_project(tiny_aligned: Project, tmp_path: Path) -> Project:
    """A private, writable copy of the aligned tiny project."""
    root = tmp_path / "root"
    shutil.copytree(tiny_aligned.layout.root, root)
    return Project(root, root / "data" / "raw", tiny_aligned.params, pd.read_parquet(Layout(root).manifest))
