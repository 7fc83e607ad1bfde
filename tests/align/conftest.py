"""Fixtures of the align tests: the tiny capture's manifest (ingested once) and a project around it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.params import Params
from tests.align.project import Project, manifest_of, with_raw


@pytest.fixture(scope="session")
def tiny_manifest(tiny_raw: Path, params: Params) -> pd.DataFrame:
    """Ingest's manifest of the session's tiny capture (its paths are relative to the raw folder)."""
    return manifest_of(with_raw(params, tiny_raw), tiny_raw)


@pytest.fixture
def project(tiny_raw: Path, tiny_manifest: pd.DataFrame, params: Params, tmp_path: Path) -> Project:
    """A project root under tmp_path whose raw folder is a private, writable copy of the tiny capture."""
    raw = tmp_path / "root" / "data" / "raw"
    shutil.copytree(tiny_raw, raw)
    return Project(tmp_path / "root", raw, params, tiny_manifest)
