"""A small project root holding exactly what the release stage (and a withdrawal) reads, built
from scratch in a temp folder: manifest, align verdicts, labels, splits, consent, aligned files,
features, a model and a few reports. Its params.yaml is the tests' own (tests/params.test.yaml).

Stage subprocesses run in it as DVC runs them (`python -m pipeline.release.stage`, cwd = the
project, with MVFER_ROOT naming it since the temp project holds no `pipeline/`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline import modes, vocab
from pipeline.layout import ROOT_ENV, Layout
from pipeline.params import Params, load_params
from pipeline.utils import io

REPO = Path(__file__).resolve().parents[2]
TEST_PARAMS = REPO / "tests" / "params.test.yaml"
RELEASE_MODULE = "pipeline.release.stage"


def subjects(n: int) -> list[str]:
    return [f"sub-{i:04x}aa" for i in range(n)]


def take_ids(subject: str, per_subject: int) -> list[str]:
    return [f"pf{subject[4:8]}{k:03d}-cam_c" for k in range(per_subject)]


def make(
    root: Path,
    n_subjects: int = 4,
    per_subject: int = 6,
    frames: tuple[int, ...] = (4, 16, 16, 3),
    source: str = vocab.SOURCE_SIMULATOR,
) -> dict[str, list[str]]:
    """Write the project; returns take ids per subject. Aligned arrays are random (incompressible)."""
    shutil.copyfile(TEST_PARAMS, root / "params.yaml")
    raw = root / "data" / "raw"
    (raw / "takes").mkdir(parents=True)
    for d in ("data/interim", "data/aligned", "data/processed/splits", "reports"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    subs = subjects(n_subjects)
    by_subject = {s: take_ids(s, per_subject) for s in subs}
    rows, labels = [], []
    for s, ids in by_subject.items():
        for k, t in enumerate(ids):
            (raw / "takes" / f"{t}.mp4").write_bytes(f"video of {t}".encode())
            light = ["frontal", "left"][k % 2]
            rows.append(
                {
                    "take_id": t,
                    "path": f"takes/{t}.mp4",
                    "sha256": "0" * 64,
                    "subject_id": s,
                    "session": "ses-01",
                    "camera": "cam_c",
                    "yaw": 0.0,
                    "pitch": 0.0,
                    "illumination": light,
                    "mode": modes.mode_id(0.0, 0.0, light),
                    "prompted_expression": vocab.CLASSES[k % 6],
                    "fps": 10.0,
                    "n_frames": frames[0],
                    "status": vocab.ACCEPTED,
                    "reason_code": None,
                    "reason": None,
                    vocab.SOURCE_COLUMN: source,
                }
            )
            labels.append(
                {
                    "take_id": t,
                    "label": vocab.CLASSES[k % 6],
                    "confidence": 0.9,
                    "agreement": 1.0,
                    "n_annotations": 3,
                    "onset_frame": 1,
                    "apex_frame": 3,
                    "flags": None,
                    "status": vocab.ACCEPTED,
                }
            )
            io.write_npz(
                root / "data" / "aligned" / f"{t}.npz",
                {
                    "frames": rng.integers(0, 255, frames, dtype=np.uint8),
                    "landmarks": rng.random((frames[0], 5, 2)).astype(np.float32),
                },
            )
    manifest = pd.DataFrame(rows)
    manifest.to_parquet(root / "data" / "interim" / "manifest.parquet", index=False)
    pd.DataFrame({"take_id": manifest["take_id"], "status": vocab.ALIGN_OK, "detection_rate": 1.0}).to_parquet(
        root / "data" / "interim" / "align_takes.parquet", index=False
    )
    pd.DataFrame(labels).to_parquet(root / "data" / "processed" / "labels.parquet", index=False)
    consent = pd.DataFrame(
        {"subject_id": subs, "consent_research": "true", "consent_public_release": "true", "withdrawn": "false"}
    )
    consent.to_csv(raw / "subjects.csv", index=False)
    manifest[["take_id", "subject_id", "path"]].rename(columns={"path": "file"}).to_csv(
        raw / "capture_log.csv", index=False
    )
    half = len(subs) // 2
    split = {
        "protocol": "subject_kfold",
        "folds": [
            {
                "fold": 0,
                "subjects": {vocab.TRAIN: subs[:half], vocab.TEST: subs[half:]},
                vocab.TRAIN: [t for s in subs[:half] for t in by_subject[s]],
                vocab.TEST: [t for s in subs[half:] for t in by_subject[s]],
            }
        ],
    }
    (root / "data" / "processed" / "splits" / "subject_kfold.json").write_text(json.dumps(split))
    for name in ("ingest", "align", "align_accuracy", "qa"):
        (root / "reports" / f"{name}.json").write_text("{}\n")
    return by_subject


def params_of(root: Path) -> Params:
    return load_params(Layout(root).params_file)


def set_release(root: Path, **release: Any) -> None:
    """Change `release.<key>` in the project's params.yaml (what a user edits before `dvc repro release`)."""
    f = Layout(root).params_file
    doc = yaml.safe_load(f.read_text())
    doc["release"].update(release)
    f.write_text(yaml.safe_dump(doc, sort_keys=False))


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, ROOT_ENV: str(root), "PYTHONPATH": str(REPO)}


def run_stage(
    root: Path, module: str = RELEASE_MODULE, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m <module>` in the project, as dvc.yaml runs a stage."""
    res = subprocess.run(
        [sys.executable, "-m", module], cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout
    )
    if check and res.returncode != 0:
        raise AssertionError(f"{module} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res


def popen_stage(root: Path, module: str = RELEASE_MODULE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module], cwd=root, env=_env(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def build_release(root: Path, version: str | None = None, previous: str | None = None) -> None:
    """The release stage in this process (as the CLI's `mvfer release build --version --previous` runs it)."""
    from pipeline.release.stage import run

    run(Layout(root), params_of(root), version=version, previous=str(root / previous) if previous else None)


def tree_digest(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), hidden ones included."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
