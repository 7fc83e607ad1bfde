"""The stage contract's shared pieces: layout, registry, parallel map, fault classes, runner, provenance."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from pipeline.errors import EnvironmentFault, PipelineError, environment_fault, is_environment_fault
from pipeline.layout import Layout
from pipeline.parallel import Executor, pmap
from pipeline.params import Params
from pipeline.registry import Registry, UnknownNameError
from pipeline.stage import EXIT_ENVIRONMENT, EXIT_INPUT, invoke, provenance, with_provenance
from pipeline.utils import io
from tests.contract import workers


def test_every_path_follows_the_root(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    for name in dir(Layout):
        value = getattr(lay, name)
        if isinstance(value, Path):
            assert value.is_relative_to(tmp_path.resolve()), name
    assert lay.resolve("data/raw") == tmp_path.resolve() / "data" / "raw"
    assert lay.resolve("/abs/rig") == Path("/abs/rig")
    assert lay.tmp.is_relative_to(lay.interim) and not lay.tmp.is_relative_to(lay.aligned)


def test_discover_prefers_the_environment_then_the_nearest_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.delenv("MVFER_ROOT", raising=False)
    assert Layout.discover(tmp_path / "sub" / "deeper").root == tmp_path.resolve()
    monkeypatch.setenv("MVFER_ROOT", str(tmp_path / "sub"))
    assert Layout.discover(tmp_path).root == (tmp_path / "sub").resolve()


def test_a_registry_names_the_key_and_the_known_names() -> None:
    reg: Registry[type] = Registry("detector")

    @reg.register("mtcnn")
    class Mtcnn:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert reg.names() == ["mtcnn"] and "mtcnn" in reg
    assert reg.create("mtcnn", size=3).size == 3
    with pytest.raises(UnknownNameError) as e:
        reg.check(["mtcnn", "retina"], key="align.detector")
    assert str(e.value) == "align.detector: unknown detector 'retina' (known: mtcnn)"
    assert isinstance(e.value, PipelineError)
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("mtcnn", object)


@pytest.mark.parametrize("executor", [1, Executor("local", 2)], ids=["serial", "two processes"])
def test_pmap_yields_in_item_order(executor: Executor | int) -> None:
    assert list(pmap(workers.square, range(8), executor, desc="t")) == [x * x for x in range(8)]


@pytest.mark.parametrize("executor", [1, Executor("local", 2)], ids=["serial", "two processes"])
def test_a_full_disk_in_a_worker_stops_the_map_in_one_line(executor: Executor | int) -> None:
    with pytest.raises(EnvironmentFault) as e:
        list(pmap(workers.disk_full, range(6), executor, desc="align"))
    assert "No space left on device" in str(e.value) and "\n" not in str(e.value)


def test_a_bug_for_one_item_propagates_unchanged() -> None:
    """pmap does not swallow item faults: the mapped function quarantines its own bad inputs."""
    with pytest.raises(ValueError, match="item 2 is malformed"):
        list(pmap(workers.bad_item, range(4), Executor("local", 2), desc="t"))


def test_a_killed_worker_is_an_environment_fault_naming_what_finished() -> None:
    with pytest.raises(EnvironmentFault) as e:
        list(pmap(workers.die, range(4), Executor("local", 2), desc="media"))
    msg = str(e.value)
    assert "lost after" in msg and "of 4 items" in msg and "rerun `dvc repro media`" in msg


def test_fault_classes() -> None:
    assert is_environment_fault(OSError(errno.ENOSPC, "No space left on device"))
    assert is_environment_fault(MemoryError())
    assert not is_environment_fault(OSError(errno.ENOENT, "No such file"))
    assert not is_environment_fault(ValueError("bad header"))
    fault = environment_fault(OSError(errno.EROFS, "Read-only file system", "/x/y"), "writing the manifest")
    assert str(fault) == "writing the manifest: Read-only file system (/x/y)"


def test_an_atomic_write_that_fails_is_an_environment_fault_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "report.json"
    with pytest.raises(EnvironmentFault, match="cannot write"), io.atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def _ok(layout: Layout, params: Params) -> None:
    io.write_json(layout.report("demo"), with_provenance({"n": 1}, params, "executor", "capture.seed"))


def _bad_input(layout: Layout, params: Params) -> None:
    raise PipelineError("capture_log.csv: row 3: field 'fps' is not a number")


def _disk_full(layout: Layout, params: Params) -> None:
    with io.atomic_path(layout.report("demo")) as tmp:
        tmp.write_text("{")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))


def test_invoke_maps_the_two_fault_classes_to_exit_codes(
    layout: Layout, params: Params, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    assert invoke(_ok, layout, params) == 0
    assert invoke(_bad_input, layout, params) == EXIT_INPUT
    assert caplog.records[-1].getMessage() == "capture_log.csv: row 3: field 'fps' is not a number"
    before = layout.report("demo").read_bytes()
    assert invoke(_disk_full, layout, params) == EXIT_ENVIRONMENT
    message = caplog.records[-1].getMessage()
    assert message.startswith("environment: cannot write ") and "No space left on device" in message
    assert layout.report("demo").read_bytes() == before  # the earlier output is untouched


def test_every_report_carries_the_same_provenance_block(layout: Layout, params: Params) -> None:
    assert invoke(_ok, layout, params) == 0
    block = json.loads(layout.report("demo").read_text())["provenance"]
    assert block["params"] == {"executor": {"kind": "local", "dask_scheduler": ""}, "capture.seed": params.capture.seed}
    assert block["machine"]["cores"] and block["python"] and block["mvfer"]
    assert block["stage_module"] == __name__ and len(block["code_sha256"]) == 64
    again = provenance(params, "executor")
    assert "code_sha256" not in again  # outside a stage run there is no stage code to name


def test_a_permission_refusal_is_one_line_not_a_traceback(
    layout: Layout, params: Params, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(layout: Layout, params: Params) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(layout.aligned / "x.npz"))

    caplog.set_level(logging.ERROR)
    assert invoke(refused, layout, params) == EXIT_INPUT
    assert caplog.records[-1].getMessage() == f"Permission denied ({layout.aligned / 'x.npz'})"


def test_a_stage_module_takes_no_arguments(tmp_path: Path) -> None:
    """`python -m <stage>` runs the stage as dvc.yaml declares it: an option is refused before any work."""
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("{}")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    env = {"MVFER_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.capture.stage", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == EXIT_INPUT and "takes no arguments" in res.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "data").exists()
