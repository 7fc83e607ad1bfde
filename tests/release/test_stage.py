"""The release stage end to end on a small generated project (subprocesses with MVFER_ROOT)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import vocab
from tests.release import fake_project

pytestmark = pytest.mark.integration


def _project(tmp_path: Path, source: str = vocab.SOURCE_SIMULATOR) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path / "proj"
    root.mkdir()
    return root, fake_project.make(root, source=source)


def test_changelog_counts_removed_takes_and_never_names_them(tmp_path: Path) -> None:
    root, by_subject = _project(tmp_path)
    fake_project.run_cli(root, "release", "build")
    victim = next(iter(by_subject))
    consent = pd.read_csv(root / "data/raw/subjects.csv", dtype=str)
    consent.loc[consent["subject_id"] == victim, "withdrawn"] = "withdrawn"  # a value the old parser read as "no"
    consent.to_csv(root / "data/raw/subjects.csv", index=False)
    fake_project.run_cli(root, "release", "build", "--version", "0.2.0", "--previous", "release/mvfer-sim-0.1.0")
    new = root / "release" / "mvfer-sim-0.2.0"
    log = (new / "CHANGELOG.md").read_text()
    assert "Compared with mvfer-sim-0.1.0" in log and "takes added: 0; removed: 6" in log and "subjects added: 0; removed: 1" in log
    for text in [log, *(p.read_text() for p in new.rglob("*") if p.suffix in (".csv", ".json", ".md"))]:
        assert victim not in text and not any(t in text for t in by_subject[victim])
    assert not any((new / "aligned" / f"{t}.npz").exists() for t in by_subject[victim])


def test_the_previous_release_is_never_guessed_from_disk(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    fake_project.run_cli(root, "release", "build")
    fake_project.run_cli(root, "release", "build", "--version", "0.2.0")
    log = (root / "release" / "mvfer-sim-0.2.0" / "CHANGELOG.md").read_text()
    assert "Not compared with an earlier release" in log and "mvfer-sim-0.1.0" not in log
    res = fake_project.run_cli(root, "release", "build", "--version", "0.3.0", "--previous", "release/nope", check=False)
    assert res.returncode == 1 and "release/nope: previous release" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("source,simulated", [(vocab.SOURCE_SIMULATOR, True), (vocab.SOURCE_RIG, False)])
def test_simulated_only_when_the_manifest_says_so(tmp_path: Path, source: str, simulated: bool) -> None:
    root, _ = _project(tmp_path, source)
    (root / "reports" / "capture.json").write_text('{"n_subjects": 4}\n')  # dvc repro always writes it: not evidence
    fake_project.run_cli(root, "release", "build")
    rel = root / "release" / "mvfer-sim-0.1.0"
    for f in ("DATASHEET.md", "README.md", "croissant.json"):
        assert ("imulat" in (rel / f).read_text()) is simulated, f
    assert json.loads((root / "reports" / "release.json").read_text())["data_source"] == source


def test_a_damaged_aligned_file_stops_the_release_in_one_line(tmp_path: Path) -> None:
    root, by_subject = _project(tmp_path)
    t = next(iter(by_subject.values()))[0]
    p = root / "data" / "aligned" / f"{t}.npz"
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0xFF
    p.write_bytes(bytes(b))
    res = fake_project.run_cli(root, "release", "build", check=False)
    errors = [ln for ln in res.stderr.splitlines() if " ERROR " in ln]
    assert res.returncode == 1 and len(errors) == 1 and f"{t}.npz: sha256" in errors[0] and "(damaged)" in errors[0]
    assert "Traceback" not in res.stderr and not (root / "release").exists()
