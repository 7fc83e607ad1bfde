"""A pytest plugin: under CI=true a skipped test is a failure, except for hardware the machine lacks.

Why: a skip hides a broken install (a missing package, a server that did not start) and CI would
still exit 0. Only a skip whose reason names missing hardware (CUDA, a GPU) is allowed.
"""

from __future__ import annotations

import os

import pytest

HARDWARE_SKIP_WORDS = ("cuda", "gpu")


def skip_is_allowed(reason: str) -> bool:
    """A skip may stand only when it says it is for hardware the machine lacks."""
    return any(w in reason.lower() for w in HARDWARE_SKIP_WORDS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not skip_is_allowed(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a skip hides a broken install): {reason}"
