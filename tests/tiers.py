"""A pytest plugin: every test is in exactly one tier, `unit`, `integration` or `e2e`.

Why: `make test` (the README's command, what CI runs) runs all three; `make test-fast` runs `unit`
alone in under a minute while developing. A test's tier is the highest of its own marker
(`@pytest.mark.integration` / `e2e`) and its module's entry below, so a heavy module is listed once
here instead of being found by timing it.

- unit: in-process, pure functions and small stage cores; no process pool, server, browser or `dvc`.
- integration: a stage shell on a tiny project, a process pool or a killed worker, a real server
  (Label Studio, Dask, moto), a compiler.
- e2e: `dvc repro` in a temporary clone, a real browser, strace, another CPU code path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "integration", "e2e")
TESTS = Path(__file__).resolve().parent

E2E_MODULES = {
    "test_dvc_pipeline.py",
    "importers/test_oulu_dvc.py",
    "importers/test_recordings_pilot.py",
    "annotate/test_browser.py",
    "media/test_browser_frames.py",
    "align/test_determinism.py",
}
INTEGRATION_MODULES = {
    "align/test_faults.py",
    "align/test_integrity.py",
    "align/test_stage.py",
    "capture/test_stages.py",
    "capture/test_verify.py",
    "consent/test_withdraw.py",
    "contract/test_dask.py",
    "importers/test_layouts.py",
    "importers/test_wild_chain.py",
    "ingest/test_bad_corpus.py",
    "ingest/test_source.py",
    "learn/test_bench_learn.py",
    "learn/test_features.py",
    "media/test_stage.py",
    "models/test_mv_scan.py",
    "qa/test_reannotation_round.py",
    "release/test_crash_safe.py",
    "release/test_stage.py",
    "test_dvc_deps.py",
}


def tier_of(module: str, markers: set[str]) -> str:
    """The tier of a test in `module` (path relative to tests/) carrying `markers`."""
    if "e2e" in markers or module in E2E_MODULES:
        return "e2e"
    if "integration" in markers or module in INTEGRATION_MODULES:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        try:
            module = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:
            continue
        item.add_marker(getattr(pytest.mark, tier_of(module, {m.name for m in item.iter_markers()})))


def listed_modules() -> set[str]:
    """Every module the tables name (a test checks each still exists, so a rename cannot demote it)."""
    return E2E_MODULES | INTEGRATION_MODULES
