"""The features stage: per-frame features of every take, one set per backend x extractor seed x fold.

Each fold's backends learn from that fold's training takes only (the last `frames_per_take` found
frames of each, labelled with the take's label), and the features are standardised with the
training takes' statistics only: nothing about the test subjects reaches the weights or the
scaling. Takes are streamed from `data/aligned` one at a time and stored ragged (every found and
missing frame concatenated, with offsets), never padded to the longest take.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline import vocab
from pipeline.layout import Layout
from pipeline.learn.backends import BACKENDS, PARAMS_KEY, TrainingFrames, make_backend
from pipeline.learn.common import feature_file, load_split, load_takes, reading
from pipeline.parallel import Executor, pmap
from pipeline.params import FeaturesParams, Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io
from pipeline.utils.log import setup_logging

log = logging.getLogger(__name__)
SPLIT_NAMES = vocab.SPLITS
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Take:
    """One aligned take at the features' input size: frames (T, 3, S, S) uint8, found-face mask, reference."""

    frames: np.ndarray
    valid: np.ndarray
    ref: np.ndarray


def read_take(path: Path, size: int) -> Take:
    """Frames resized to `size`, channel first; the reference is the first found frame (zeros if none)."""
    with reading(path, "aligned take"), np.load(path) as z:
        frames, valid = z["frames"], z["valid"].astype(bool)
    small = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]).transpose(0, 3, 1, 2)
    found = np.flatnonzero(valid)
    ref = small[found[0]] if len(found) else np.zeros_like(small[0])
    return Take(np.ascontiguousarray(small), valid, ref)


def training_frames(aligned: Path, take_ids: list[str], labels: list[int], size: int, per_take: int) -> TrainingFrames:
    """The last `per_take` found frames of each take with its label and its reference frame."""
    xs, rs, ys = [], [], []
    for t, y in zip(take_ids, labels):
        take = read_take(aligned / f"{t}.npz", size)
        idx = np.flatnonzero(take.valid)[-per_take:]
        xs.append(take.frames[idx])
        rs.append(np.repeat(take.ref[None], len(idx), axis=0))
        ys.append(np.full(len(idx), y, dtype=np.int64))
    if not xs:
        empty = np.zeros((0, 3, size, size), np.uint8)
        return TrainingFrames(empty, empty, np.zeros(0, np.int64))
    return TrainingFrames(np.concatenate(xs), np.concatenate(rs), np.concatenate(ys))


def standardise(
    feats: np.ndarray, valid: np.ndarray, train_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale every frame by the mean and std of the training takes' found frames; missing frames are 0."""
    ref = feats[train_rows & valid]
    mean = ref.mean(axis=0) if len(ref) else np.zeros(feats.shape[1], np.float32)
    std = ref.std(axis=0) if len(ref) else np.ones(feats.shape[1], np.float32)
    std = np.where(std > 1e-6, std, 1.0)
    out = ((feats - mean) / std).astype(np.float32)
    out[~valid] = 0.0
    return out, mean.astype(np.float32), std.astype(np.float32)


def lengths_of(valid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per take: index of the last found frame + 1 (0 when no face was found)."""
    out = np.zeros(len(offsets) - 1, np.int64)
    for i in range(len(out)):
        found = np.flatnonzero(valid[offsets[i] : offsets[i + 1]])
        out[i] = found[-1] + 1 if len(found) else 0
    return out


def save_npz(dest: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz with fixed zip metadata (entry order, dates, modes): same arrays, same bytes."""
    import io as _io

    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = _io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


Saver = Callable[[Path, dict[str, np.ndarray]], None]


@dataclass(frozen=True)
class Job:
    """One feature extractor: a backend and seed fitted on one fold's training takes, then every take encoded."""

    params: FeaturesParams
    backend: str
    seed: int
    fold: dict
    labels: dict[str, int]
    n_classes: int
    aligned: Path
    out: Path
    meta: dict[str, dict[str, str]]  # take_id -> mode, subject_id
    save: Saver = save_npz  # a module-level function (the job goes to a spawned worker)


def run_job(job: Job) -> dict[str, Any]:
    """Fit, encode (streaming takes), standardise with training statistics, write the ragged .npz."""
    import torch

    torch.set_num_threads(1)
    p, fold = job.params, job.fold
    t0 = time.perf_counter()
    train = training_frames(
        job.aligned, fold["train"], [job.labels[t] for t in fold["train"]], p.input_size, p.frames_per_take
    )
    val = training_frames(
        job.aligned, fold["val"], [job.labels[t] for t in fold["val"]], p.input_size, p.frames_per_take
    )
    backend = make_backend(
        job.backend,
        input_size=p.input_size,
        feature_dim=p.feature_dim,
        epochs=p.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
    )
    info = backend.fit(train, val, job.n_classes, job.seed + 1000 * fold["fold"])
    fit_s = time.perf_counter() - t0
    del train, val
    ids = sorted({t for k in SPLIT_NAMES for t in fold.get(k, [])})
    parts, valid, offsets = [], [], [0]
    for t in ids:  # streamed: one take's frames in memory at a time
        take = read_take(job.aligned / f"{t}.npz", p.input_size)
        parts.append(backend.encode(take.frames, take.ref))
        valid.append(take.valid)
        offsets.append(offsets[-1] + len(take.valid))
    valid_all, offs = np.concatenate(valid), np.asarray(offsets, np.int64)
    pos = {t: i for i, t in enumerate(ids)}
    in_train = np.zeros(len(valid_all), bool)
    for t in fold["train"]:
        in_train[offs[pos[t]] : offs[pos[t] + 1]] = True
    x, mean, std = standardise(np.concatenate(parts), valid_all, in_train)
    job.save(
        job.out,
        {
            "take_ids": np.array(ids),
            "offsets": offs,
            "valid": valid_all,
            "lengths": lengths_of(valid_all, offs),
            "labels": np.array([job.labels[t] for t in ids], np.int64),
            "modes": np.array([job.meta[t]["mode"] for t in ids]),
            "subjects": np.array([job.meta[t]["subject_id"] for t in ids]),
            "features": x,
            "train_mean": mean,
            "train_std": std,
        },
    )
    log.info(
        "features fold %d %s seed %d: %s(fit %.1f s, all %.1f s)",
        fold["fold"],
        job.backend,
        job.seed,
        f"val frame accuracy {info['val_frame_acc']:.3f} " if "val_frame_acc" in info else "",
        fit_s,
        time.perf_counter() - t0,
    )
    return {
        "fold": fold["fold"],
        "backend": job.backend,
        "seed": job.seed,
        "takes_encoded": len(ids),
        "frames_encoded": int(offs[-1]),
        "train_takes": len(fold["train"]),
        "fit_seconds": round(fit_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        **info,
    }


def plan(
    p: FeaturesParams, split: dict[str, Any], takes: Any, aligned: Path, out_root: Path, save: Saver = save_npz
) -> list[Job]:
    """One job per fold x backend x seed (this order), writing under `out_root`."""
    classes = split["classes"]
    cls = {c: i for i, c in enumerate(classes)}
    labels = {t: cls[c] for t, c in takes["label"].items() if c in cls}
    meta = {
        t: {"mode": str(r["mode"]), "subject_id": str(r["subject_id"])}
        for t, r in takes[["mode", "subject_id"]].iterrows()
    }
    return [
        Job(
            p,
            b,
            s,
            fold,
            labels,
            len(classes),
            aligned,
            feature_file(p.protocol, b, s, fold["fold"], out_root),
            meta,
            save,
        )
        for fold in split["folds"]
        for b in p.backends
        for s in p.seeds
    ]


def extract(jobs: list[Job], workers: int) -> list[dict[str, Any]]:
    """Every job, in `workers` spawned processes (1: in this one); results in job order."""
    return list(
        pmap(run_job, jobs, Executor("local", workers), desc="features", unit="extractor", initializer=setup_logging)
    )


def run(layout: Layout, params: Params, *, save: Saver = save_npz) -> None:
    """Stage `features`: splits and aligned takes in, data/processed/features and reports/features.json out.

    `save` writes one feature file (tests inject a failing one to see a full disk stop the stage).
    """
    p = params.features
    BACKENDS.check(p.backends, PARAMS_KEY)
    split, takes = load_split(p.protocol, layout.splits), load_takes(layout.splits)
    t0 = time.perf_counter()
    with io.atomic_dir(layout.features) as tmp_root:
        results = extract(plan(p, split, takes, layout.aligned, tmp_root, save), p.workers)
    report = {
        "protocol": p.protocol,
        "classes": split["classes"],
        "backends": list(p.backends),
        "seeds": list(p.seeds),
        "seconds": round(time.perf_counter() - t0, 1),
        "extractors": results,
    }
    # each extractor ran on one thread (run_job); no sequence model runs here
    io.write_json(
        layout.features_report,
        with_provenance(
            report,
            params,
            "features",
            threads=1,
            workers=p.workers,
            mv_scan="not used (no sequence model in this stage)",
        ),
    )


if __name__ == "__main__":
    # the shell of the module by its name, so that workers unpickle its jobs from it (not from __main__)
    from pipeline.learn.features import run

    raise SystemExit(main(run))
