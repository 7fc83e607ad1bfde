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

@pytest.mark.skip(reason="slow on a GPU-less laptop")
def test_mentions_gpu_but_is_not_about_hardware_missing():
    pass

@pytest.mark.skip(reason="placeholder")
def test_placeholder():
    pass

def test_plain():
    pass
"""


MODULE_SKIP = """
import pytest

missing = pytest.importorskip("a_package_that_is_not_installed_anywhere")

def test_never_collected():
    pass
"""


def test_skip_fails_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "tests.skip_guard")
    outcomes = result.parseoutcomes()  # a marked skip happens at setup, so pytest counts it as an error
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 3  # only "needs CUDA" may skip
    assert outcomes["passed"] == 1 and outcomes["skipped"] == 1
    result.stdout.fnmatch_lines(["*a skip hides a broken install*"])
    assert result.ret != 0


def test_a_module_level_skip_fails_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(MODULE_SKIP)
    result = pytester.runpytest("-p", "tests.skip_guard")
    result.stdout.fnmatch_lines(["*module skipped under CI=true*"])
    assert result.ret != 0


def test_skip_is_a_skip_outside_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "tests.skip_guard")
    result.assert_outcomes(passed=1, skipped=4)
