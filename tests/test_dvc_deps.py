"""Every DVC stage declares every module its command imports (traced from the command, not listed by hand)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import paths
from tests.dvc_deps import Stage, closure, command_modules, load_stages, undeclared_modules

STAGES = load_stages(paths.ROOT)


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_stage_declares_every_module_it_imports(stage: Stage) -> None:
    missing = undeclared_modules(paths.ROOT, stage)
    assert not missing, f"stage {stage.name!r} imports modules its dvc.yaml deps do not cover: {missing}"


def test_the_closure_follows_imports_inside_functions() -> None:
    """The align command's handler imports the stage lazily; the closure still reaches the detectors."""
    files = {str(f.relative_to(paths.ROOT)) for f in closure(paths.ROOT, command_modules("python -m pipeline align run"))}
    assert "pipeline/align/stage.py" in files and "pipeline/align/detectors/mtcnn.py" in files
    assert "pipeline/cli.py" in files and "pipeline/params.py" in files and "pipeline/paths.py" in files
    assert "pipeline/release/build.py" not in files


def test_a_planted_undeclared_import_is_caught(tmp_path: Path) -> None:
    """The test of the test: a copy of the package where a stage module imports a new module."""
    root = tmp_path / "repo"
    shutil.copytree(paths.ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "pipeline" / "planted_helper.py").write_text("VALUE = 1\n")
    target = root / "pipeline" / "split" / "stage.py"
    target.write_text(target.read_text() + "\n\ndef _planted():\n    from pipeline.planted_helper import VALUE\n\n    return VALUE\n")
    split = next(s for s in STAGES if s.name == "split")
    missing = undeclared_modules(root, split)
    assert "pipeline/planted_helper.py" in missing
    declared = Stage(split.name, split.cmd, split.deps + ("pipeline/planted_helper.py",), split.outs)
    assert "pipeline/planted_helper.py" not in undeclared_modules(root, declared)


def test_undeclared_reads_are_found_in_an_strace_log(tmp_path: Path) -> None:
    """The read check on a log as strace writes it: relative and absolute paths, failures and writes ignored."""
    from tests.dvc_deps import parse_strace_opens, undeclared_reads

    r = tmp_path.resolve()
    log = "\n".join([
        f'101 openat(AT_FDCWD<{r}>, "data/interim/manifest.parquet", O_RDONLY|O_CLOEXEC) = 5<{r}/data/interim/manifest.parquet>',
        f'101 openat(AT_FDCWD<{r}>, "{r}/reports/capture.json", O_RDONLY|O_CLOEXEC) = 6<{r}/reports/capture.json>',
        f'102 openat(AT_FDCWD<{r}>, "data", O_RDONLY|O_CLOEXEC|O_DIRECTORY) = 7<{r}/data>',
        f'102 openat(7<{r}/data>, "aligned", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY) = 8<{r}/data/aligned>',
        f'102 openat(AT_FDCWD<{r}>, "data/processed/splits/x.json", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 8<{r}/data/processed/splits/x.json>',
        f'102 openat(AT_FDCWD<{r}>, "data/processed/missing.json", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)',
        f'102 openat(AT_FDCWD<{r}>, "data/interim/.tmp/split/a.json", O_RDONLY|O_CLOEXEC) = 9<{r}/data/interim/.tmp/split/a.json>',
        f'103 openat(AT_FDCWD<{r}>, "pipeline/__pycache__/cli.cpython-311.pyc", O_RDONLY|O_CLOEXEC) = 9<{r}/pipeline/__pycache__/cli.cpython-311.pyc>',
        '103 openat(AT_FDCWD</>, "/usr/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY|O_CLOEXEC) = 3</usr/lib/x86_64-linux-gnu/libc.so.6>',
        f'103 openat(AT_FDCWD<{r}>, "params.yaml", O_RDONLY|O_CLOEXEC) = 3<{r}/params.yaml>',
    ])
    opened = parse_strace_opens(log, tmp_path)
    assert r / "data/interim/manifest.parquet" in opened and r / "data/aligned" in opened
    assert (tmp_path / "data/processed/splits/x.json").resolve() not in opened  # a write
    assert (tmp_path / "data/processed/missing.json").resolve() not in opened  # failed
    stage = Stage("split", "python -m pipeline split", ("data/interim/manifest.parquet",), ("data/processed/splits",))
    assert undeclared_reads(tmp_path, stage, opened) == ["data/aligned", "reports/capture.json"]  # not data/ (holds a dep)
    declared = Stage("split", stage.cmd, stage.deps + ("data/aligned", "reports/capture.json"), stage.outs)
    assert undeclared_reads(tmp_path, declared, opened) == []
