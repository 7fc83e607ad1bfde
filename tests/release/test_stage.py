"""The release stage end to end on a small generated project: the shell on `Layout(root)`, and
`python -m pipeline.release.stage` run in the project as DVC runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import stages, vocab
from pipeline.release import stage
from tests.release import fake_project

pytestmark = pytest.mark.integration


def _project(tmp_path: Path, source: str = vocab.SOURCE_SIMULATOR) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path / "proj"
    root.mkdir()
    return root, fake_project.make(root, source=source)


def test_changelog_counts_removed_takes_and_never_names_them(tmp_path: Path) -> None:
    root, by_subject = _project(tmp_path)
    fake_project.build_release(root)
    victim = next(iter(by_subject))
    consent = pd.read_csv(root / "data/raw/subjects.csv", dtype=str)
    consent.loc[consent["subject_id"] == victim, "withdrawn"] = "withdrawn"  # a value the old parser read as "no"
    consent.to_csv(root / "data/raw/subjects.csv", index=False)
    fake_project.build_release(root, version="0.2.0", previous="release/mvfer-sim-0.1.0")
    new = root / "release" / "mvfer-sim-0.2.0"
    log = (new / "CHANGELOG.md").read_text()
    assert "Compared with mvfer-sim-0.1.0" in log and "takes added: 0; removed: 6" in log
    assert "subjects added: 0; removed: 1" in log
    for text in [log, *(p.read_text() for p in new.rglob("*") if p.suffix in (".csv", ".json", ".md"))]:
        assert victim not in text and not any(t in text for t in by_subject[victim])
    assert not any((new / "aligned" / f"{t}.npz").exists() for t in by_subject[victim])


def test_the_previous_release_is_never_guessed_from_disk(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    fake_project.run_stage(root)
    fake_project.set_release(root, version="0.2.0")
    fake_project.run_stage(root)
    log = (root / "release" / "mvfer-sim-0.2.0" / "CHANGELOG.md").read_text()
    assert "Not compared with an earlier release" in log and "mvfer-sim-0.1.0" not in log
    fake_project.set_release(root, version="0.3.0", previous="release/nope")
    res = fake_project.run_stage(root, check=False)
    assert res.returncode == 1 and "release/nope: previous release" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("source,simulated", [(vocab.SOURCE_SIMULATOR, True), (vocab.SOURCE_RIG, False)])
def test_simulated_only_when_the_manifest_says_so(tmp_path: Path, source: str, simulated: bool) -> None:
    root, _ = _project(tmp_path, source)
    (root / "reports" / "capture.json").write_text('{"n_subjects": 4}\n')  # dvc repro always writes it: not evidence
    fake_project.build_release(root)
    rel = root / "release" / "mvfer-sim-0.1.0"
    for f in ("DATASHEET.md", "README.md", "croissant.json"):
        assert ("imulat" in (rel / f).read_text()) is simulated, f
    assert json.loads((root / "reports" / "release.json").read_text())["data_source"] == source


def test_a_damaged_aligned_file_stops_the_release_in_one_line(tmp_path: Path) -> None:
    """A fault of one input: exit 1, one line naming the file, nothing published."""
    root, by_subject = _project(tmp_path)
    t = next(iter(by_subject.values()))[0]
    p = root / "data" / "aligned" / f"{t}.npz"
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0xFF
    p.write_bytes(bytes(b))
    res = fake_project.run_stage(root, check=False)
    errors = [ln for ln in res.stderr.splitlines() if " ERROR " in ln]
    assert res.returncode == 1 and len(errors) == 1 and f"{t}.npz: sha256" in errors[0] and "(damaged)" in errors[0]
    assert "Traceback" not in res.stderr and not (root / "release").exists()


def test_the_report_carries_provenance_but_the_release_never_does(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    marker = "provenance-of-align-must-not-ship"
    (root / "reports" / "align.json").write_text(json.dumps({"detector": "mtcnn", "provenance": {"note": marker}}))
    fake_project.run_stage(root)
    report = json.loads((root / "reports" / "release.json").read_text())
    assert report["provenance"]["params"]["release"]["name"] == "mvfer-sim"
    assert report["provenance"]["stage_module"] == "pipeline.release.stage"
    assert report["archive"] == "release/mvfer-sim-0.1.0.tar.gz"
    released = fake_project.tree_digest(root / "release" / "mvfer-sim-0.1.0")
    assert not any(b"provenance" in data for data in released.values())
    assert b"mtcnn" in released["DATASHEET.md"]  # the figures still come from the report


def test_reports_read_lose_their_provenance_block(tmp_path: Path) -> None:
    p = tmp_path / "qa.json"
    p.write_text(json.dumps({"tasks": 3, "provenance": {"mvfer": "x"}}))
    assert stage.read_report(p) == {"tasks": 3}
    assert stage.read_report(tmp_path / "absent.json") == {}
    assert stage.REPORTS_READ is stages.RELEASE_REPORTS  # the registry's list, not a second one
