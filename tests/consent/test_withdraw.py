"""`mvfer consent withdraw`: afterwards no output, release, archive or DVC cache object mentions the
subject or any of their takes; what cannot be reached is reported; the record names no one.

The command runs as the CLI runs it (`invoke(withdraw_command, Layout(root), params, ...)`) on a
generated project; nothing is patched."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import vocab
from pipeline.consent import REDACTED_REASON, read_ledger, redact_withdrawn
from pipeline.errors import EnvironmentFault
from pipeline.layout import Layout
from pipeline.privacy.labelstudio import delete_tasks
from pipeline.privacy.withdraw import withdraw_command
from pipeline.release.verify import verify
from pipeline.stage import EXIT_INPUT, invoke
from tests.release import fake_project


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()  # noqa: S324 - DVC's cache naming


def _cache_put(cache: Path, data: bytes, suffix: str = "") -> str:
    h = _md5(data)
    p = cache / "files" / "md5" / h[:2] / (h[2:] + suffix)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return h


def _extra_outputs(root: Path, by_subject: dict[str, list[str]]) -> None:
    """What the other stages write, each holding take ids the way that stage does."""
    takes = [t for ids in by_subject.values() for t in ids]
    feats = root / "data/processed/features/subject_kfold"
    feats.mkdir(parents=True)
    np.savez(feats / "fold0.npz", take_ids=np.array(takes), x=np.zeros((len(takes), 4), np.float32))
    for seed in (0, 1):
        ck = root / f"models/subject_kfold/cnn/lstm/fold0_seed{seed}.pt"
        ck.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": {"w": torch.zeros(3)}, "seed": seed}, ck)
    (root / "reports/plots").mkdir(parents=True)
    pd.DataFrame({"take_id": takes, "actual": "fear", "predicted": "fear"}).to_csv(
        root / "reports/plots/confusion.csv", index=False
    )
    pd.DataFrame({"take_id": np.repeat(takes, 2), "frame": np.tile([0, 1], len(takes))}).to_parquet(
        root / "data/interim/frames_qc.parquet", index=False
    )
    export = [
        {"id": i, "data": {"take_id": t, "video": f"/data/local-files/?d=media/{t}.mp4"}, "annotations": []}
        for i, t in enumerate(takes)
    ]
    (root / "annotations/exports").mkdir(parents=True)
    (root / "annotations/exports/export-1.json").write_text(json.dumps(export))
    (root / "data/interim/annotations_sim.json").write_text(json.dumps(export))
    (root / "data/media").mkdir(parents=True)
    for t in takes:
        (root / "data/media" / f"{t}.mp4").write_bytes(b"proxy " + t.encode())
    (root / "reports/qa.md").write_text("# QA\n\n" + "".join(f"- {t}: ok\n" for t in takes))


def _dvc_cache(root: Path, by_subject: dict[str, list[str]]) -> None:
    """Cache objects as DVC 3 stores them: file contents by md5, and `.dir` listings naming takes."""
    cache = root / ".dvc" / "cache"
    entries = []
    for f in sorted((root / "data/aligned").iterdir()):
        entries.append({"md5": _cache_put(cache, f.read_bytes()), "relpath": f.name})
    _cache_put(cache, json.dumps(entries).encode(), ".dir")
    _cache_put(cache, (root / "data/interim/manifest.parquet").read_bytes())
    _cache_put(cache, (root / "release/mvfer-sim-0.0.9.tar.gz").read_bytes())
    (root / ".dvc" / "config").write_text(
        "[core]\n    analytics = false\n['remote \"storage\"']\n    url = s3://bucket/mvfer\n"
    )


def _mentions(data: bytes, ids: set[str], name: str) -> list[str]:
    """Where `data` (or what it decompresses or loads to) mentions an id."""
    found = [name] if any(i.encode() in data for i in ids) else []
    if data[:2] == b"\x1f\x8b":
        raw = gzip.decompress(data)
        found += [name] if any(i.encode() in raw for i in ids) else []
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                for m in tar.getmembers():
                    found += [f"{name}:{m.name}"] if any(i in m.name for i in ids) else []
                    if m.isfile():
                        found += _mentions(tar.extractfile(m).read(), ids, f"{name}:{m.name}")
        except tarfile.TarError:
            pass
    if data[:4] == b"PAR1":
        text = pd.read_parquet(io.BytesIO(data)).to_csv()
        found += [name] if any(i in text for i in ids) else []
    if data[:2] == b"PK" and name.endswith(".npz"):
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            for k in z.files:
                if z[k].dtype.kind in "US" and any(i in str(x) for x in z[k].ravel() for i in ids):
                    found.append(f"{name}:{k}")
    return found


def _grep_everything(root: Path, ids: set[str]) -> list[str]:
    """Every file of the project except the raw input (the consent ledger must keep the subject)."""
    raw = root / "data" / "raw"
    hits = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_relative_to(raw) or rel == "params.yaml":
            continue
        if any(i in rel for i in ids):
            hits.append(rel)
        elif p.is_file():
            hits += _mentions(p.read_bytes(), ids, rel)
    return hits


@pytest.mark.integration
def test_withdraw_removes_the_subject_from_every_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    by_subject = fake_project.make(root)
    fake_project.build_release(root, version="0.0.9")
    shutil.rmtree(root / "release" / "mvfer-sim-0.0.9")  # an older release kept only as its archive
    fake_project.build_release(root)
    _extra_outputs(root, by_subject)
    _dvc_cache(root, by_subject)
    victim = next(iter(by_subject))
    ids = {victim, *by_subject[victim]}
    assert len(_grep_everything(root, ids)) > 20  # the grep finds them before

    capsys.readouterr()
    assert (
        invoke(withdraw_command, Layout(root), fake_project.params_of(root), subject=victim, use_label_studio=False)
        == 0
    )
    assert "withdrawn: 6 takes removed" in capsys.readouterr().out

    assert _grep_everything(root, ids) == []
    # what stays: the other subjects, consistent releases, counts that add up
    assert read_ledger(root / "data/raw/subjects.csv").records[victim].withdrawn
    for target in ("release/mvfer-sim-0.1.0", "release/mvfer-sim-0.1.0.tar.gz", "release/mvfer-sim-0.0.9.tar.gz"):
        assert verify(root / target)["ok"], target
    takes = pd.read_csv(root / "release/mvfer-sim-0.1.0/metadata/takes.csv")
    assert (
        len(takes) == 18
        and "6 takes removed after a withdrawal" in (root / "release/mvfer-sim-0.1.0/CHANGELOG.md").read_text()
    )
    manifest = pd.read_parquet(root / "data/interim/manifest.parquet")
    assert len(manifest) == 24 and (manifest["reason"] == REDACTED_REASON).sum() == 6
    assert len(pd.read_parquet(root / "data/interim/frames_qc.parquet")) == 36
    assert not (root / "data/processed/features/subject_kfold/fold0.npz").exists()
    retrain = json.loads((root / "models/RETRAIN.json").read_text())
    assert retrain["checkpoints"] == ["subject_kfold/cnn/lstm/fold0_seed0.pt", "subject_kfold/cnn/lstm/fold0_seed1.pt"]
    split = json.loads((root / "data/processed/splits/subject_kfold.json").read_text())
    assert len(split["folds"][0]["train"]) == 6 and victim not in split["folds"][0]["subjects"]["train"]
    record = json.loads((root / "privacy/withdrawals.jsonl").read_text().splitlines()[-1])
    assert record["takes"] == 6 and record["releases_amended"] == 2 and record["dvc_cache_objects_removed"] >= 9
    assert any("DVC remote 'storage'" in u for u in record["unreachable"])
    assert any("Label Studio: no server configured" in u for u in record["unreachable"])


def test_label_studio_tasks_of_the_subject_are_deleted_through_the_sdk() -> None:
    tasks = {
        1: [
            SimpleNamespace(id=10, data={"take_id": "pf01-cam_c"}),
            SimpleNamespace(id=11, data={"take_id": "pf02-cam_c"}),
        ],
        2: [SimpleNamespace(id=20, data={"video": "/data/local-files/?d=media/pf01-cam_r30.mp4"})],
    }
    deleted = []
    pager = lambda items: SimpleNamespace(items=items, response=SimpleNamespace(total=len(items)))  # noqa: E731
    ls = SimpleNamespace(
        projects=SimpleNamespace(
            list=lambda **kw: SimpleNamespace(items=[SimpleNamespace(id=1), SimpleNamespace(id=2)])
        ),
        tasks=SimpleNamespace(
            list=lambda project, **kw: pager(tasks[project] if kw.get("page", 1) == 1 else []),
            delete=lambda id: deleted.append(id),
        ),
    )
    assert delete_tasks(ls, {"pf01-cam_c", "pf01-cam_r30"}) == 2 and deleted == [10, 20]


def test_ingest_counts_a_withdrawn_subjects_takes_without_naming_them() -> None:
    df = pd.DataFrame(
        {
            "take_id": ["a-1", "b-1"],
            "subject_id": ["sub-a", "sub-b"],
            "path": ["takes/a-1.mp4", "takes/b-1.mp4"],
            "sha256": ["1" * 64, "2" * 64],
            "status": [vocab.QUARANTINED, vocab.ACCEPTED],
            "reason_code": ["consent_withdrawn", None],
            "reason_codes": ["consent_withdrawn", None],
            "reason": ["subject sub-a withdrew consent (subjects.csv line 2)", None],
            "log_line": [2, 3],
        }
    )
    report = {
        "quarantined": 1,
        "quarantined_items": [
            {
                "take_id": "a-1",
                "path": "takes/a-1.mp4",
                "log_line": 2,
                "reason_code": "consent_withdrawn",
                "reason": df["reason"][0],
            }
        ],
    }
    out, rep = redact_withdrawn(df, report)
    assert "sub-a" not in out.to_csv() + json.dumps(rep) and "a-1" not in out.to_csv() + json.dumps(rep)
    assert (
        list(out["status"]) == [vocab.QUARANTINED, vocab.ACCEPTED]
        and out["take_id"][1] == "b-1"
        and rep["quarantined"] == 1
    )


def test_an_unreadable_release_archive_is_reported_not_fatal(tmp_path: Path) -> None:
    from pipeline.privacy.releases import purge_releases

    out = tmp_path / "release"
    out.mkdir()
    (out / "ds-0.1.0.tar.gz").write_bytes(b"\x1f\x8b damaged")
    res = purge_releases(out, tmp_path / "tmp", {"sub-a"}, "2026-11-25", 0)
    assert res["archives_unreadable"] == 1 and res["releases_amended"] == 0 and not (tmp_path / "tmp").exists()


def test_a_full_disk_while_purging_a_release_stops_the_withdrawal(tmp_path: Path) -> None:
    """A fault of the machine is never counted as an unreadable archive: the purge stops, the archive stays."""
    from pipeline.privacy.releases import purge_releases

    out = tmp_path / "release"
    out.mkdir()
    archive = out / "ds-0.1.0.tar.gz"
    archive.write_bytes(b"\x1f\x8b an archive")

    def disk_full(src: Path, dest: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dest))

    with pytest.raises(EnvironmentFault, match="extracting ds-0.1.0.tar.gz to purge it: No space left on device"):
        purge_releases(out, tmp_path / "tmp", {"sub-a"}, "2026-11-25", 0, extract=disk_full)
    assert archive.read_bytes() == b"\x1f\x8b an archive" and not (tmp_path / "tmp").exists()


def test_an_unknown_subject_is_a_one_line_error_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    fake_project.make(root, n_subjects=2, per_subject=2)
    before = fake_project.tree_digest(root)
    rc = invoke(withdraw_command, Layout(root), fake_project.params_of(root), subject="sub-nobody")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert rc == EXIT_INPUT and len(errors) == 1 and "'sub-nobody' is not in the consent table" in errors[0]
    assert "Traceback" not in caplog.text and fake_project.tree_digest(root) == before


def test_the_cache_dir_comes_from_the_dvc_config(tmp_path: Path) -> None:
    from pipeline.privacy.dvc_cache import cache_dir

    dvc = tmp_path / ".dvc"
    dvc.mkdir()
    assert cache_dir(dvc) == dvc / "cache"
    (dvc / "config").write_text("[cache]\n    dir = ../../shared-cache\n")
    assert cache_dir(dvc) == (tmp_path.parent / "shared-cache").resolve()
