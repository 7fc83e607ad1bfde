"""A pytest plugin: under CI=true a skipped test is a failure, except for hardware the machine lacks.

Why: a skip hides a broken install (a missing package, a server that did not start) and CI would
still exit 0. Only a skip whose reason says it needs missing hardware (CUDA, a GPU) may stand.
Both kinds of skip are caught: a test's own (run phase) and a whole module's (collection phase,
`importorskip` at module level or `pytest.skip(allow_module_level=True)`).
"""

from __future__ import annotations

import os
import re

import pytest

# "needs CUDA", "no GPU", "requires a CUDA device", "CUDA not available"
HARDWARE_REASON = re.compile(
    r"\b(needs?|requires?|no|without)\b.{0,20}\b(cuda|gpu)\b"
    r"|\b(cuda|gpu)\b.{0,20}\b(not available|unavailable|missing)\b",
    re.IGNORECASE,
)


def skip_is_allowed(reason: str) -> bool:
    """A skip may stand only when it says it is for hardware the machine lacks."""
    return bool(HARDWARE_REASON.search(reason))


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _reason(longrepr: object) -> str:
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not _under_ci() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report.longrepr)
    if not skip_is_allowed(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a skip hides a broken install): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if not _under_ci() or not report.skipped:
        return
    reason = _reason(report.longrepr)
    if not skip_is_allowed(reason):
        report.outcome = "failed"
        report.longrepr = f"module skipped under CI=true (a skip hides a broken install): {reason}"
