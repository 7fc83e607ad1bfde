"""dvc.yaml is written from the stage registry, and each stage depends on exactly the code it imports."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from pipeline.deps import closure, code_deps
from pipeline.dvcyaml import drift, render
from pipeline.layout import Layout
from pipeline.stages import STAGES, Stage
from tests.dvc_deps import load_stages

ROOT = Layout.discover(Path(__file__).parent).root


def test_dvc_yaml_is_what_the_registry_generates() -> None:
    diff = drift(ROOT)
    assert not diff, "dvc.yaml drifted from pipeline/stages.py (run `mvfer dvc-yaml --write`):\n" + "\n".join(diff[:60])


def test_dvc_yaml_lists_the_registry_stages_in_order() -> None:
    assert [s.name for s in load_stages(ROOT)] == [s.name for s in STAGES]


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_each_stage_module_is_a_runnable_shell(stage: Stage) -> None:
    """`python -m <module>` runs `module.run` through the stage contract's `main`."""
    path = ROOT.joinpath(*stage.module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body), f"{path}: no run()"
    mains = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert mains and "main(run)" in ast.unparse(mains[0]), f"{path}: no `raise SystemExit(main(run))` block"


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_no_stage_depends_on_the_cli_or_the_registry_it_does_not_read(stage: Stage) -> None:
    """A help-text edit in the CLI, or another stage's entry in the registry, reruns nothing."""
    deps = code_deps(ROOT, stage.module)
    assert "pipeline/cli.py" not in deps
    assert "pipeline/annotate/commands.py" not in deps
    if stage.name not in {"release"}:  # release asks the registry which reports it reads
        assert "pipeline/stages.py" not in deps, f"{stage.name} imports the stage registry"


def test_the_closure_follows_imports_inside_functions() -> None:
    files = {f.relative_to(ROOT).as_posix() for f in closure(ROOT, {"pipeline.align.stage"})}
    assert {
        "pipeline/align/stage.py",
        "pipeline/align/detectors/mtcnn.py",
        "pipeline/stage.py",
        "pipeline/layout.py",
        "pipeline/params.py",
    } <= files
    assert "pipeline/release/build.py" not in files and "pipeline/learn/train.py" not in files


def test_a_planted_import_enters_the_generated_deps(tmp_path: Path) -> None:
    """The test of the generator: a stage module that imports a new module depends on it, and --check sees drift."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")
    assert drift(root) == []
    (root / "pipeline" / "planted_helper.py").write_text("VALUE = 1\n")
    target = root / "pipeline" / "split" / "stage.py"
    target.write_text(
        target.read_text() + "\n\ndef _planted():\n    from pipeline.planted_helper import VALUE\n\n    return VALUE\n"
    )
    assert "pipeline/planted_helper.py" in code_deps(root, "pipeline.split.stage")
    assert "pipeline/planted_helper.py" not in code_deps(root, "pipeline.ingest.stage")
    diff = drift(root)
    assert any(line.startswith("+") and "planted_helper" in line for line in diff)
    (root / "dvc.yaml").write_text(render(root))
    assert drift(root) == []


def test_every_registry_path_is_a_layout_path() -> None:
    """The registry's outputs and data deps and the paths stage code writes through the Layout are one list:
    a path spelled in pipeline/stages.py but nowhere in the Layout (or the other way round) fails here."""
    lay = Layout(ROOT)
    known = {lay.relative(getattr(lay, n)) for n in dir(Layout) if isinstance(getattr(lay, n, None), Path)}
    known |= {lay.relative(Layout.truth(lay.raw)), lay.relative(Layout.capture_log(lay.raw))}
    missing = [
        (s.name, p) for s in STAGES for p in [o.path for o in s.outs] + list(s.deps) if "${" not in p and p not in known
    ]
    assert not missing, f"registry paths with no Layout property: {missing}"
