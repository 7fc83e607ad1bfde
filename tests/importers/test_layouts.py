"""Each importer on a small tree in its dataset's layout: takes, labels, folds, counted exclusions,
the source left untouched, and output that ingest accepts."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import EnvironmentFault
from pipeline.importers import IMPORTERS, run_import
from pipeline.importers.common import DatasetImportError, Link, link_or_copy
from pipeline.ingest.run import ingest
from pipeline.params import Params
from pipeline.registry import UnknownNameError
from tests.importers import trees
from tests.importers.conftest import import_params
from tests.importers.trees import SimTake


def snapshot(root: Path) -> dict[str, tuple[str, float]]:
    """Every file under root with its content hash and mtime: the source must not change at all."""
    return {
        p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _log(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "capture_log.csv", dtype=str, keep_default_na=False)


def _import(layout: str, src: Path, out: Path, p: Params, link: Link = link_or_copy) -> dict:
    before = snapshot(src)
    report = run_import(layout, src, out, p.import_, p.rig.expressions, link=link)
    assert snapshot(src) == before, "the importer changed the source tree"
    assert json.loads((out / "import_report.json").read_text()) == report
    return report


def test_oulu_casia_labels_modes_exclusions_and_links(tmp_path: Path, sim_takes: list[SimTake], params: Params) -> None:
    p = import_params(params)
    src, out = tmp_path / "oulu", tmp_path / "raw"
    good = trees.oulu_casia(src, sim_takes, imagings=("VL", "NI"))
    report = _import("oulu-casia", src, out, p)
    assert report["takes"] == good == 24 and report["subjects"] == 2
    assert report["excluded_by_reason"] == {"empty_folder": 1, "not_in_template": 1, "unknown_label": 1}
    reasons = {e["path"]: e["reason_code"] for e in report["excluded_items"]}
    assert reasons["OriginalImg/VL/Strong/P001/Fear"] == "empty_folder"
    assert reasons["OriginalImg/VL/Strong/P001/Bored"] == "unknown_label"
    log = _log(out)
    row = log.set_index("take_id").loc["oulu-casia-NI-Dark-P002-Surprise"]
    assert (row["imaging"], row["light"], row["illumination"], row["dataset_label"], row["subject_id"]) == (
        "NI",
        "Dark",
        "dark",
        "surprise",
        "oulu-casia-P002",
    )
    assert (row["yaw"], row["pitch"]) == ("0", "0")
    # hard links: the frames are the source's own inodes, no bytes copied
    src_frame = src / row["source_path"] / "000.jpeg"
    assert os.stat(out / row["file"] / "000.jpeg").st_ino == src_frame.stat().st_ino
    with open(out / "subjects.csv") as f:
        subjects = list(csv.DictReader(f))
    assert [s["consent_research"] for s in subjects] == ["", ""]  # left for the lab to fill


def test_copy_true_copies_instead_of_linking(tmp_path: Path, sim_takes: list[SimTake], params: Params) -> None:
    src, out = tmp_path / "oulu", tmp_path / "raw"
    trees.oulu_casia(src, sim_takes, defects=False)
    _import("oulu-casia", src, out, import_params(params, copy=True))
    row = _log(out).iloc[0]
    f = out / row["file"] / "000.jpeg"
    assert f.stat().st_nlink == 1 and f.read_bytes() == (src / row["source_path"] / "000.jpeg").read_bytes()


def test_ckplus_missing_and_unusable_labels_are_counted(
    tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    src, out = tmp_path / "ck", tmp_path / "raw"
    expected = trees.ckplus(src, sim_takes)
    report = _import("ckplus", src, out, import_params(params))
    assert dict(zip(_log(out)["take_id"], _log(out)["dataset_label"])) == expected
    assert report["excluded_by_reason"] == {"empty_folder": 1, "label_not_in_rig": 1, "missing_label": 1}
    assert any("contempt" in e["reason"] for e in report["excluded_items"])


@pytest.mark.parametrize("layout", ["dfew", "mafw", "ferv39k", "afew"])
def test_in_the_wild_layouts_keep_labels_and_official_folds(
    layout: str, tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    src, out = tmp_path / layout, tmp_path / "raw"
    expected = getattr(trees, layout)(src, sim_takes)
    report = _import(layout, src, out, import_params(params))
    log = _log(out)
    got = {t: (lab, fold) for t, lab, fold in zip(log["take_id"], log["dataset_label"], log["official_fold"])}
    assert got == expected
    assert (
        (log["subject_id"] == log["take_id"]).all()
        and (log["yaw"] == "").all()
        and (log["illumination"] == "unknown").all()
    )
    if layout == "dfew":
        assert report["excluded_by_reason"] == {"missing_label": 1, "missing_take": 1, "unknown_label": 1}
    else:
        assert report["excluded"] == 0
    if layout == "ferv39k":
        assert set(log["scene"]) == {"Action", "Crime"}


def test_dfew_clip_in_two_test_sets_is_excluded(tmp_path: Path, sim_takes: list[SimTake], params: Params) -> None:
    src, out = tmp_path / "dfew", tmp_path / "raw"
    trees.dfew(src, sim_takes)
    f = src / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    f.write_text(f.read_text() + "3,5\n")  # clip 3 is in set 4's test list already
    report = _import("dfew", src, out, import_params(params))
    assert "dfew-00003" not in set(_log(out)["take_id"])
    assert report["excluded_by_reason"].get("conflicting_folds") == 1


@pytest.mark.parametrize("layout", ["oulu-casia", "ckplus", "dfew", "mafw", "ferv39k", "afew"])
def test_ingest_accepts_every_imported_take_once_the_licence_is_stated(
    layout: str, tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    src, out = tmp_path / "src", tmp_path / "raw"
    getattr(trees, layout.replace("-", "_"))(src, sim_takes)
    blank = import_params(params)
    report = _import(layout, src, out, blank)
    manifest, rep = ingest(blank, out)
    assert rep["accepted"] == 0 and set(rep["quarantined_by_reason"]) == {"consent_invalid"}  # fail closed
    p = import_params(params, licence=True)
    _import(layout, src, tmp_path / "raw2", p)
    manifest, rep = ingest(p, tmp_path / "raw2")
    assert rep["accepted"] == report["takes"] > 0 and rep["quarantined"] == 0, rep["quarantined_items"][:3]
    assert (manifest["dataset_label"] == manifest["prompted_expression"]).all()
    assert manifest["mode"].notna().all()


def test_refusals_are_one_line_errors(tmp_path: Path, sim_takes: list[SimTake], params: Params) -> None:
    src = tmp_path / "oulu"
    trees.oulu_casia(src, sim_takes, defects=False)
    p = import_params(params)
    with pytest.raises(UnknownNameError, match="known: afew, ckplus, dfew, ferv39k, mafw, oulu-casia, pattern"):
        run_import("oulu", src, tmp_path / "raw", p.import_, p.rig.expressions)
    with pytest.raises(DatasetImportError, match="outside the source tree"):
        run_import("oulu-casia", src, src / "raw", p.import_, p.rig.expressions)
    with pytest.raises(DatasetImportError, match="source folder not found"):
        run_import("oulu-casia", tmp_path / "nope", tmp_path / "raw", p.import_, p.rig.expressions)
    assert not (src / "raw").exists()


def test_an_earlier_import_is_replaced_but_a_foreign_folder_is_never_overwritten(
    tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    p = import_params(params)
    src, out = tmp_path / "oulu", tmp_path / "raw"
    trees.oulu_casia(src, sim_takes, defects=False)
    _import("oulu-casia", src, out, p)
    gone = src / "OriginalImg" / "VL" / "Weak"
    for f in sorted(gone.rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    gone.rmdir()
    report = _import("oulu-casia", src, out, p)
    assert sorted(x.name for x in (out / "takes").iterdir()) == sorted(_log(out)["take_id"]) and report["takes"] == 8
    rig = tmp_path / "rig"
    rig.mkdir()
    (rig / "capture_log.csv").write_text("a lab's own log\n")
    with pytest.raises(DatasetImportError, match="holds no import.json"):
        run_import("oulu-casia", src, rig, p.import_, p.rig.expressions)
    assert (rig / "capture_log.csv").read_text() == "a lab's own log\n"


def test_a_take_that_cannot_be_placed_is_excluded_and_the_others_go_on(
    tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    src, out = tmp_path / "oulu", tmp_path / "raw"
    trees.oulu_casia(src, sim_takes, defects=False)

    def flaky(s: Path, d: Path, copy: bool) -> None:  # root reads every file: simulate one unreadable frame
        if "P002/Surprise" in s.as_posix() and "Dark" in s.as_posix():
            raise PermissionError(13, "Permission denied")
        link_or_copy(s, d, copy)

    report = _import("oulu-casia", src, out, import_params(params), link=flaky)
    assert report["takes"] == 11 and report["excluded_by_reason"] == {"cannot_place": 1}
    assert "Permission denied" in report["excluded_items"][0]["reason"]
    assert not list((out / "takes").glob(".*"))  # no temp left behind


def test_across_filesystems_a_take_is_one_symlink_that_ingest_follows(
    tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    import errno

    src, out = tmp_path / "oulu", tmp_path / "raw"
    trees.oulu_casia(src, sim_takes, defects=False)

    def no_hard_links(a: Path, b: Path, copy: bool) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    p = import_params(params, licence=True)
    report = _import("oulu-casia", src, out, p, link=no_hard_links)
    takes = sorted((out / "takes").iterdir())
    assert len(takes) == report["takes"] == 12 and all(t.is_symlink() for t in takes)
    assert json.loads((out / "import.json").read_text())["source_root"] == str(src.resolve())
    manifest, rep = ingest(p, out)
    assert rep["accepted"] == 12, rep["quarantined_items"][:2]


def test_a_full_disk_stops_the_import_and_writes_no_log(
    tmp_path: Path, sim_takes: list[SimTake], params: Params
) -> None:
    """A fault of the machine is not one take's: no take is excluded for it, no log or report is written."""
    src, out = tmp_path / "oulu", tmp_path / "raw"
    trees.oulu_casia(src, sim_takes, defects=False)
    placed: list[Path] = []

    def fills_up(s: Path, d: Path, copy: bool) -> None:
        if len(placed) >= 20:
            raise OSError(28, "No space left on device", str(d))
        placed.append(d)
        link_or_copy(s, d, copy)

    with pytest.raises(EnvironmentFault, match="No space left on device"):
        run_import("oulu-casia", src, out, params.import_, params.rig.expressions, link=fills_up)
    assert not (out / "capture_log.csv").exists() and not (out / "import_report.json").exists()


def test_the_layouts_come_from_one_registry(tmp_path: Path, params: Params) -> None:
    assert IMPORTERS.names() == ["afew", "ckplus", "dfew", "ferv39k", "mafw", "oulu-casia", "pattern", "recordings"]
    tmp_path.joinpath("src").mkdir()
    with pytest.raises(UnknownNameError, match="layout: unknown import layout 'oulu' \\(known: afew, ckplus"):
        run_import("oulu", tmp_path / "src", tmp_path / "raw", params.import_, params.rig.expressions)
    fps = {k: v for k, v in params.import_.fps.items() if k != "dfew"}
    with pytest.raises(DatasetImportError, match="import.fps.dfew is missing"):
        run_import(
            "dfew",
            tmp_path / "src",
            tmp_path / "raw",
            params.import_.model_copy(update={"fps": fps}),
            params.rig.expressions,
        )
    assert not (tmp_path / "raw").exists()


def test_the_cli_imports_and_fails_in_one_line(
    tmp_path: Path,
    sim_takes: list[SimTake],
    capsys: pytest.CaptureFixture[str],
    layout,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("MVFER_ROOT", str(layout.root))  # the temp project (tests/params.test.yaml), not the live one
    src = tmp_path / "oulu"
    trees.oulu_casia(src, sim_takes, defects=False)
    assert main(["import", "oulu-casia", str(src), "--out", str(tmp_path / "raw")]) == 0
    assert capsys.readouterr().out.startswith("12 takes of 2 subjects imported into")
    assert main(["import", "oulu-casia", str(tmp_path / "nowhere"), "--out", str(tmp_path / "raw2")]) == 1
    with pytest.raises(SystemExit) as refused:  # an unknown layout: argparse lists the registry's names
        main(["import", "oulu", str(src), "--out", str(tmp_path / "raw2")])
    assert refused.value.code == 2 and "oulu-casia" in capsys.readouterr().err
    assert not (tmp_path / "raw2").exists()
