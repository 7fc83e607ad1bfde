"""Shared fixtures: a tiny simulated capture built once per session (nothing is downloaded)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.layout import Layout
from pipeline.params import CaptureParams, Params, Pose, load_params

TEST_PARAMS = Path(__file__).parent / "params.test.yaml"

# Under CI=true a skipped test fails the run (tests/skip_guard.py); every test has one tier (tests/tiers.py).
pytest_plugins = [
    "tests.skip_guard",
    "tests.labelstudio_fixtures",
    "tests.tiers",
]  # the latter: Label Studio home in a temp folder, server fixtures


@pytest.fixture(scope="session")
def params() -> Params:
    """The tests' own parameters (tests/params.test.yaml), never the live params.yaml."""
    return load_params(TEST_PARAMS)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """An empty project under tmp_path: stage shells read and write only through it."""
    (tmp_path / "params.yaml").write_text(TEST_PARAMS.read_text())
    return Layout(tmp_path)


def tiny_capture_params(**overrides) -> CaptureParams:
    """A capture small enough for unit tests: 2 subjects, 2 expressions, 2 poses, 2 lights."""
    base = dict(
        seed=7,
        n_subjects=2,
        n_withdrawn=0,
        n_no_public_release=0,
        expressions=["happiness", "surprise"],
        poses=[Pose(camera="cam_c", yaw=0, pitch=0), Pose(camera="cam_r30", yaw=30, pitch=0)],
        illuminations=["frontal", "left"],
        frame_size=96,
        fps=10.0,
        n_frames=8,
        return_to_neutral=False,
        sessions=1,
        workers=1,
    )
    base.update(overrides)
    return CaptureParams(**base)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated raw capture folder, rendered once; copy it before changing it."""
    from pipeline.capture.simulate import simulate

    out = tmp_path_factory.mktemp("capture") / "raw"
    simulate(tiny_capture_params(), out)
    return out


@pytest.fixture
def raw_copy(tiny_raw: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny capture."""
    dest = tmp_path / "raw"
    shutil.copytree(tiny_raw, dest)
    return dest
