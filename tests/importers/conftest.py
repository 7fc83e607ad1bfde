"""Simulated takes decoded once per session, to be laid out in each public dataset's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.params import Params
from tests.importers.trees import SimTake, load_sim_takes


@pytest.fixture(scope="session")
def sim_takes(tiny_raw: Path) -> list[SimTake]:
    return load_sim_takes(tiny_raw)


def import_params(params: Params, *, licence: bool = False, copy: bool = False) -> Params:
    """Repository params with the importer's licence switch and copy flag set, and short takes allowed."""
    lic = params.import_.licence.model_copy(
        update={"terms": "test licence" if licence else "", "research_use": licence}
    )
    imp = params.import_.model_copy(update={"licence": lic, "copy_files": copy})
    bounds = params.ingest.bounds.model_copy(update={"duration_s": (0.1, 600.0)})
    return params.model_copy(
        update={"import_": imp, "ingest": params.ingest.model_copy(update={"bounds": bounds, "workers": 1})}
    )
