"""The features stage: per-frame features of every take, one set per backend x extractor seed x fold.

Each fold's backends learn from that fold's training takes only (the last `frames_per_take` found
frames of each, labelled with the take's label), and the features are standardised with the
training takes' statistics only: nothing about the test subjects reaches the weights or the
scaling. Stored ragged (every found and missing frame concatenated, with offsets), never padded.

Cross-fitting (`features.crossfit_folds` K >= 2): a CNN fitted on some takes and then used to encode
those same takes gives the sequence models near-separable training features that the validation and
test takes never have (stacking without cross-fitting). So the fold's training subjects are split
into K groups (seeded per extractor seed and fold); CNN k is fitted on the other K-1 groups and
encodes group k's takes only, so every training take is encoded by a CNN that never saw its
subject. Each validation and test subject is assigned to one of the K CNNs in turn (sorted
subjects, round robin), which encodes all of its takes: every take the sequence models see, in
training, validation or test, is one out-of-sample CNN's encoding, so the three have the same
distribution (an average of the K CNNs' scores would be smoother at test than in training, and a
CNN fitted on all training subjects would be sharper and cost one more fit); it also encodes each
frame once. The output is the class scores (`features.encoding: logits`): the K CNNs' embeddings are
not in correspondence (unit j of one network is not unit j of another), their class scores are.

Every take is decoded and resized once into a memory-mapped cache that the worker processes share;
frames are encoded in batches, found frames only.
"""

from __future__ import annotations

import logging
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline import vocab
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.learn.backends import BACKENDS, PARAMS_KEY, Backend, TrainingFrames, make_backend
from pipeline.learn.common import device, feature_file, load_split, load_takes, reading
from pipeline.parallel import Executor, pmap
from pipeline.params import FeaturesParams, Params
from pipeline.stage import main, with_provenance
from pipeline.utils import io
from pipeline.utils.log import setup_logging

log = logging.getLogger(__name__)
SPLIT_NAMES = vocab.SPLITS


class FeaturesConfigError(PipelineError, ValueError):
    """A combination of features parameters the stage cannot run (one line, naming the parameter)."""


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


@dataclass(frozen=True)
class FrameCache:
    """Every take's frames at the input size, decoded once: `frames` (N, 3, S, S) uint8 on disk (memory-mapped by
    each worker), `valid` (N,), each take's frame range and the row of its reference frame (-1: none found)."""

    frames: Path
    valid: np.ndarray
    span: dict[str, tuple[int, int]]
    ref_row: dict[str, int]

    def load(self) -> np.ndarray:
        return np.load(self.frames, mmap_mode="r")


def cache_frames(aligned: Path, take_ids: list[str], size: int, dest: Path) -> FrameCache:
    """Decode and resize each take once (every extractor used to decode every take again)."""
    spans, refs, parts, n = {}, {}, [], 0
    for t in take_ids:
        take = read_take(aligned / f"{t}.npz", size)
        found = np.flatnonzero(take.valid)
        spans[t] = (n, n + len(take.valid))
        refs[t] = n + int(found[0]) if len(found) else -1
        parts.append(take)
        n += len(take.valid)
    frames = np.concatenate([x.frames for x in parts]) if parts else np.zeros((0, 3, size, size), np.uint8)
    np.save(dest, frames)
    valid = np.concatenate([x.valid for x in parts]) if parts else np.zeros(0, bool)
    return FrameCache(dest, valid, spans, refs)


def take_frames(
    frames: np.ndarray, cache: FrameCache, take_ids: list[str], found_only: bool, last: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, their takes' reference frames, row in the cache) of `take_ids`, in order: every frame, or the found
    ones (`found_only`), or the `last` found ones of each take."""
    rows = []
    ref_rows = []
    for t in take_ids:
        a, b = cache.span[t]
        r: np.ndarray = np.arange(a, b)
        if found_only or last is not None:
            r = r[cache.valid[a:b]]
        if last is not None:
            r = r[-last:]
        rows.append(r)
        ref_rows.append(np.full(len(r), cache.ref_row[t]))
    idx = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    ridx = np.concatenate(ref_rows) if ref_rows else np.zeros(0, np.int64)
    x = np.asarray(frames[idx]) if len(idx) else np.zeros((0, *frames.shape[1:]), np.uint8)
    refs = np.zeros_like(x)
    has = ridx >= 0
    if has.any():
        refs[has] = frames[ridx[has]]
    return x, refs, idx


def training_frames(
    frames: np.ndarray, cache: FrameCache, take_ids: list[str], labels: dict[str, int], per_take: int
) -> TrainingFrames:
    """The last `per_take` found frames of each take with its label and its reference frame."""
    x, refs, idx = take_frames(frames, cache, take_ids, True, per_take)
    counts = [min(per_take, int(cache.valid[a:b].sum())) for a, b in (cache.span[t] for t in take_ids)]
    y = np.repeat(np.array([labels[t] for t in take_ids], np.int64), counts) if take_ids else np.zeros(0, np.int64)
    return TrainingFrames(x, refs, y)


def subject_groups(subjects: list[str], k: int, seed: int) -> list[list[str]]:
    """The training subjects in `k` groups of near-equal size, shuffled by `seed` (the cross-fitting folds)."""
    order = sorted(set(subjects))
    perm = np.random.default_rng(seed).permutation(len(order))
    return [sorted(order[i] for i in perm[g::k]) for g in range(k)]


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
    """One feature extractor: a backend and seed fitted on one fold's training takes (K CNNs when cross-fitted),
    then every take of the fold encoded."""

    params: FeaturesParams
    backend: str
    seed: int
    fold: dict
    labels: dict[str, int]
    n_classes: int
    cache: FrameCache
    out: Path
    meta: dict[str, dict[str, str]]  # take_id -> mode, subject_id
    save: Saver = save_npz  # a module-level function (the job goes to a spawned worker)


def _make(p: FeaturesParams, name: str) -> Backend:
    return make_backend(
        name, input_size=p.input_size, feature_dim=p.feature_dim, epochs=p.epochs, batch_size=p.batch_size, lr=p.lr
    )


def encode_takes(
    models: list[Backend], frames: np.ndarray, cache: FrameCache, take_ids: list[str], logits: bool
) -> dict[str, np.ndarray]:
    """Each take's found frames encoded by every model in `models`, averaged (one model: its encoding);
    missing frames stay 0."""
    x, refs, idx = take_frames(frames, cache, take_ids, found_only=True)
    enc = np.mean([m.encode(x, refs, logits) for m in models], axis=0) if len(idx) else None
    out, pos = {}, 0
    for t in take_ids:
        a, b = cache.span[t]
        valid = cache.valid[a:b]
        feats = np.zeros((b - a, 0 if enc is None else enc.shape[1]), np.float32)
        k = int(valid.sum())
        if k:
            feats[valid] = enc[pos : pos + k]  # type: ignore[index]  # (not None when any frame was found)
        pos += k
        out[t] = feats
    return out


def run_job(job: Job) -> dict[str, Any]:
    """Fit (K CNNs when cross-fitted), encode, standardise with training statistics, write the ragged .npz."""
    import torch

    torch.set_num_threads(1)
    p, fold = job.params, job.fold
    t0 = time.perf_counter()
    frames = job.cache.load()
    fold_seed = job.seed + 1000 * fold["fold"]
    logits = p.encoding == "logits"
    ids = sorted({t for k in SPLIT_NAMES for t in fold.get(k, [])})
    train_ids = list(fold["train"])
    val = training_frames(frames, job.cache, fold["val"], job.labels, p.frames_per_take)
    probe = _make(p, job.backend)
    k = p.crossfit_folds if probe.trained else 0
    encoded: dict[str, np.ndarray] = {}
    inner: list[dict[str, Any]] = []
    if k:
        subjects = {job.meta[t]["subject_id"] for t in train_ids}
        if len(subjects) < k:
            raise FeaturesConfigError(
                f"features.crossfit_folds: {k} groups of training subjects, but fold {fold['fold']} of "
                f"{p.protocol} trains on {len(subjects)} subject(s) (lower it, or 0 for in-sample features)"
            )
        groups = subject_groups(sorted(subjects), k, fold_seed)
        models = []
        for g, held in enumerate(groups):
            held_set = set(held)
            fit_ids = [t for t in train_ids if job.meta[t]["subject_id"] not in held_set]
            oof_ids = [t for t in train_ids if job.meta[t]["subject_id"] in held_set]
            model = _make(p, job.backend)
            info = model.fit(
                training_frames(frames, job.cache, fit_ids, job.labels, p.frames_per_take),
                val,
                job.n_classes,
                fold_seed + 100_000 * (g + 1),
            )
            oof = training_frames(frames, job.cache, oof_ids, job.labels, p.frames_per_take)
            info["oof_frame_acc"] = round(_frame_accuracy(model, oof, logits), 4)
            info.update(subjects_held_out=held, fit_takes=len(fit_ids))
            inner.append(info)
            encoded.update(encode_takes([model], frames, job.cache, oof_ids, logits))
            models.append(model)
        fit_s = time.perf_counter() - t0
        train_set = set(train_ids)
        rest = [t for t in ids if t not in train_set]
        others = sorted({job.meta[t]["subject_id"] for t in rest})
        for g, model in enumerate(models):  # each val/test subject to one CNN, in turn
            mine = set(others[g::k])
            encoded.update(
                encode_takes([model], frames, job.cache, [t for t in rest if job.meta[t]["subject_id"] in mine], logits)
            )
        info = {
            "crossfit_folds": k,
            "val_frame_acc": round(float(np.mean([i["val_frame_acc"] for i in inner])), 4),
            "oof_frame_acc": round(float(np.mean([i["oof_frame_acc"] for i in inner])), 4),
            "inner": inner,
        }
    else:
        info = probe.fit(
            training_frames(frames, job.cache, train_ids, job.labels, p.frames_per_take), val, job.n_classes, fold_seed
        )
        fit_s = time.perf_counter() - t0
        encoded = encode_takes([probe], frames, job.cache, ids, logits)
    offsets = np.concatenate([[0], np.cumsum([len(encoded[t]) for t in ids])]).astype(np.int64)
    valid_all = np.concatenate([job.cache.valid[slice(*job.cache.span[t])] for t in ids])
    in_train = np.zeros(len(valid_all), bool)
    pos = {t: i for i, t in enumerate(ids)}
    for t in train_ids:
        in_train[offsets[pos[t]] : offsets[pos[t] + 1]] = True
    x, mean, std = standardise(np.concatenate([encoded[t] for t in ids]), valid_all, in_train)
    job.save(
        job.out,
        {
            "take_ids": np.array(ids),
            "offsets": offsets,
            "valid": valid_all,
            "lengths": lengths_of(valid_all, offsets),
            "labels": np.array([job.labels[t] for t in ids], np.int64),
            "modes": np.array([job.meta[t]["mode"] for t in ids]),
            "subjects": np.array([job.meta[t]["subject_id"] for t in ids]),
            "features": x,
            "train_mean": mean,
            "train_std": std,
        },
    )
    log.info(
        "features fold %d %s seed %d: %s%s(fit %.1f s, all %.1f s)",
        fold["fold"],
        job.backend,
        job.seed,
        f"val frame accuracy {info['val_frame_acc']:.3f} " if "val_frame_acc" in info else "",
        f"out-of-fold training frame accuracy {info['oof_frame_acc']:.3f} " if "oof_frame_acc" in info else "",
        fit_s,
        time.perf_counter() - t0,
    )
    return {
        "fold": fold["fold"],
        "backend": job.backend,
        "seed": job.seed,
        "takes_encoded": len(ids),
        "frames_encoded": int(valid_all.sum()),
        "train_takes": len(train_ids),
        "fit_seconds": round(fit_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        **info,
    }


def _frame_accuracy(model: Backend, data: TrainingFrames, logits: bool) -> float:
    """Frame accuracy of a trained backend's class scores on frames it did not learn from."""
    if not len(data.labels):
        return float("nan")
    return float((model.encode(data.frames, data.refs, logits=True).argmax(1) == data.labels).mean())


def plan(
    p: FeaturesParams, split: dict[str, Any], takes: Any, cache: FrameCache, out_root: Path, save: Saver = save_npz
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
            cache,
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


def check(p: FeaturesParams) -> None:
    """Names and combinations the stage cannot run, before any input is read (one line each)."""
    BACKENDS.check(p.backends, PARAMS_KEY)
    if p.encoding == "logits":
        untrained = [b for b in p.backends if not _make(p, b).trained]
        if untrained:
            raise FeaturesConfigError(
                f"features.encoding: logits needs trained backends; {', '.join(untrained)} has no class scores "
                "(use encoding: embedding, crossfit_folds: 0)"
            )


def run(layout: Layout, params: Params, *, save: Saver = save_npz) -> None:
    """Stage `features`: splits and aligned takes in, data/processed/features and reports/features.json out.

    `save` writes one feature file (tests inject a failing one to see a full disk stop the stage).
    """
    p = params.features
    check(p)
    split, takes = load_split(p.protocol, layout.splits), load_takes(layout.splits)
    dev = device()
    workers = 1 if dev.type == "cuda" else p.workers  # one process drives the GPU
    t0 = time.perf_counter()
    layout.processed.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=layout.processed, prefix=".features-cache-", suffix=".tmp") as tmp,
        io.atomic_dir(layout.features) as tmp_root,
    ):
        ids = sorted({t for fold in split["folds"] for k in SPLIT_NAMES for t in fold.get(k, [])})
        cache = cache_frames(layout.aligned, ids, p.input_size, Path(tmp) / "frames.npy")
        cache_s = time.perf_counter() - t0
        results = extract(plan(p, split, takes, cache, tmp_root, save), workers)
    report = {
        "protocol": p.protocol,
        "classes": split["classes"],
        "backends": list(p.backends),
        "seeds": list(p.seeds),
        "crossfit_folds": p.crossfit_folds,
        "encoding": p.encoding,
        "decode_seconds": round(cache_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "extractors": results,
    }
    log.info(
        "features: %d extractors in %.1f s (decoding %.1f s) with %d worker(s) on %s",
        len(results),
        report["seconds"],
        cache_s,
        workers,
        dev,
    )
    # each extractor ran on one thread (run_job); no sequence model runs here
    io.write_json(
        layout.features_report,
        with_provenance(
            report,
            params,
            "features",
            threads=1,
            workers=workers,
            device=str(dev),
            mv_scan="not used (no sequence model in this stage)",
        ),
    )


if __name__ == "__main__":
    # the shell of the module by its name, so that workers unpickle its jobs from it (not from __main__)
    from pipeline.learn.features import run

    raise SystemExit(main(run))
