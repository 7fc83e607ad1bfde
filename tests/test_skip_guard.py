"""The skip guard itself: under CI=true a skip fails the run unless it is for missing hardware."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_needs_package():
    pytest.importorskip("a_package_that_is_not_installed_anywhere")

@pytest.mark.skip(reason="needs CUDA")
def test_needs_cuda():
    pass

def test_plain():
    pass
"""


def test_skip_fails_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "tests.skip_guard")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*a skip hides a broken install*"])


def test_skip_is_a_skip_outside_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "tests.skip_guard")
    result.assert_outcomes(passed=1, skipped=2)
