"""The docs: a strict MkDocs build, a short README, and no figure that differs from the report it comes from.

Why: hand-typed numbers drift (the README once said 702 takes where the data had 1,296). Every
figure a stage measured is rendered by `scripts/render_docs.py` between `generated` markers; these
tests fail when a committed block no longer equals what its report (or the stage list) gives.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "render_docs.py"
README_MAX_LINES = 210


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def render_docs() -> ModuleType:
    return _load(SCRIPT, "render_docs")


def _check(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--check", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "extending.html").exists()


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    assert lines[3].startswith("make run") and lines[4].startswith("make test"), "the two commands come first"


def test_committed_figures_equal_the_committed_reports() -> None:
    out = _check()
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of README.md, docs/*.md and reports/, rendered so that it checks clean (whatever the tree's state)."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "README.md", root / "README.md")
    for page in (ROOT / "docs").glob("*.md"):
        shutil.copy(page, root / "docs" / page.name)
    shutil.copytree(ROOT / "reports", root / "reports")
    done = _render("--root", str(root))
    assert done.returncode == 0, done.stderr
    assert _check("--root", str(root)).returncode == 0
    return root


def _render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def _pages(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in [root / "README.md", *(root / "docs").glob("*.md")]}


def test_a_figure_that_differs_from_its_report_fails_naming_the_block(project: Path) -> None:
    qa = json.loads((project / "reports" / "qa.json").read_text())
    qa["agreement"]["krippendorff_alpha"] = 0.291  # the stale figure the README once carried
    (project / "reports" / "qa.json").write_text(json.dumps(qa))
    before = _pages(project)

    out = _check("--root", str(project))

    assert out.returncode == 1
    assert "docs/annotation.md: block 'qa' is stale" in out.stderr
    assert "'headline'" not in out.stderr, "only the blocks that show qa.json's changed figure are stale"
    assert _pages(project) == before, "--check writes nothing"


def test_a_changed_result_makes_the_readme_headline_and_the_result_tables_stale(project: Path) -> None:
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    for models in metrics["backends"].values():
        models["lstm"]["test_unseen_accuracy_mean"] += 0.01
    (project / "reports" / "metrics.json").write_text(json.dumps(metrics))

    out = _check("--root", str(project))

    assert out.returncode == 1
    assert "README.md: block 'headline' is stale" in out.stderr
    assert "docs/experiment.md: block 'results' is stale" in out.stderr


def test_rendering_fills_emptied_blocks_with_the_same_text(project: Path) -> None:
    rendered = _pages(project)
    block = re.compile(r"(<!-- BEGIN generated:([a-z0-9_]+) -->\n).*?(<!-- END generated:\2 -->)", re.S)
    for page in rendered:
        page.write_text(block.sub(r"\1\3", page.read_text()))
    assert _check("--root", str(project)).returncode == 1

    done = _render("--root", str(project))

    assert done.returncode == 0, done.stderr
    assert _pages(project) == rendered


def test_the_result_tables_are_results_table_py_output(render_docs: ModuleType) -> None:
    tables = _load(ROOT / "scripts" / "results_table.py", "results_table").tables
    metrics = json.loads((ROOT / "reports" / "metrics.json").read_text())
    assert tables(metrics).strip() in (ROOT / "docs" / "experiment.md").read_text()


def test_unknown_or_unclosed_blocks_are_errors(render_docs: ModuleType, tmp_path: Path) -> None:
    reports = render_docs.Reports(ROOT / "reports")
    _, problems = render_docs.render_text(
        "<!-- BEGIN generated:nosuch -->\n<!-- END generated:nosuch -->\n", reports, {}
    )
    assert problems == ["unknown block 'nosuch'"]
    _, problems = render_docs.render_text("<!-- BEGIN generated:qa -->\nno end\n", reports, {})
    assert problems == ["block 'qa' has no END marker"]


def test_a_missing_report_is_one_line_naming_it(render_docs: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("<!-- BEGIN generated:qa -->\n<!-- END generated:qa -->\n")
    out = _check("--root", str(tmp_path), "--reports", str(tmp_path / "none"))
    assert out.returncode == 1
    assert "reports/qa.json is missing" in out.stderr


def test_the_stage_table_lists_every_registered_stage() -> None:
    from pipeline.stages import STAGES

    readme = (ROOT / "README.md").read_text()
    for stage in STAGES:
        assert f"`{stage.cmd}`" in readme and f"`mvfer {' '.join(stage.cli)}`" in readme, stage.name


def test_a_report_without_a_figure_is_one_line_naming_the_block(project: Path) -> None:
    qa = json.loads((project / "reports" / "qa.json").read_text())
    del qa["agreement"]["fleiss_kappa"]
    (project / "reports" / "qa.json").write_text(json.dumps(qa))
    out = _check("--root", str(project))
    assert out.returncode == 1
    assert "block 'qa' cannot be rendered: KeyError 'fleiss_kappa'" in out.stderr
    assert "Traceback" not in out.stderr
