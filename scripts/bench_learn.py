"""Benchmark the `features` and `train` stages beside their floors, in one run, on synthetic input.

Builds a small synthetic project in a temporary folder (random aligned takes of 112 px in the format
align writes, decoded once by the stage's own `cache_frames`; a ragged feature file in the format
`features` writes) and times, with the settings of params.yaml (`features.*`, `train.*`; epochs
can be lowered) and the stage workers' one torch thread:

features (frames/s):
- `fit`: `CNNBackend.fit` on the training takes' last `frames_per_take` found frames (uint8 to float,
  augmentation, loss, AdamW, cosine schedule, one validation pass); frames = frames x epochs.
- `encode`: `encode_takes`, every found frame of every take through the fitted CNN (gather from the
  memory-mapped cache, batches of `ENCODE_BATCH`, scatter back per take).
- `extractor`: `run_job`, what a features worker runs for one backend x seed x fold (the K
  cross-fitted CNNs, their out-of-fold scoring, encoding, standardising, writing the .npz); its
  floor is the training floor once per CNN on as many frames as that CNN trains on, plus the
  encoding floor on as many frames as it encodes.
- floor (training): the same FrameCNN (channels-last) forward + cross-entropy + backward on float
  tensors already in memory, batches of `features.batch_size`, as many frames: no conversion, no
  augmentation, no optimiser step, no validation.
- floor (encoding): the same FrameCNN's forward (features, then head for logits) under
  inference_mode on float tensors in memory, batches of `ENCODE_BATCH`.

train (sequences/s, one row per variant, default `lstm` and `mv_lstm`):
- `stage`: `train.run_job`, one fit as a train worker runs it (read the feature file, pad, every
  epoch: AdamW steps with gradient clipping, a validation pass, best-state copy; save the checkpoint);
  sequences = training takes x epochs run (patience = epochs, so every epoch runs).
- floor: the bare model (`make_model`, same sizes, train mode) forward + cross-entropy + backward on
  the padded training tensors already in memory, batches of `train.batch_size`, as many sequences.
- reference: `torch.nn.LSTM` of the same input and hidden size, forward + backward of its outputs'
  sum on the same padded batches (no packing, no head). The `lstm` variant packs its batches
  (`pack_padded_sequence`), which takes torch's CPU LSTM off its fused kernel: expect its floor to
  be a few times this reference.

Ratio (x floor) = stage time / floor time, both timed in this run, interleaved (CPU seconds of this
process on a CPU; wall seconds with CUDA synchronised on a GPU); with `--repeats N` each row keeps its
fastest repeat. `--scale 1` (the default) is 12 subjects x 8 takes x 16 frames for features and 512
training sequences for train, about 30 s of one core. Prints tables; asserts nothing; `--json` also
writes the figures with the date, machine, load average and commit.

    python scripts/bench_learn.py [--scale 1] [--epochs 6] [--train-epochs 8] [--repeats 1]
                                  [--json reports/bench/learn.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.layout import Layout
from pipeline.learn import features as feat
from pipeline.learn import train as tr
from pipeline.learn.backends import make_backend
from pipeline.learn.backends.cnn import ENCODE_BATCH, CNNBackend
from pipeline.learn.backends.frame_cnn import FrameCNN
from pipeline.learn.common import device, feature_file, seed_everything
from pipeline.models import mv_scan_native
from pipeline.models.registry import make_model
from pipeline.params import FeaturesParams, TrainParams, load_params
from pipeline.utils import io
from pipeline.utils.machine import git_commit, machine

ROOT = Path(__file__).resolve().parent.parent  # the checkout

R = TypeVar("R")
N_CLASSES = 6  # the default rig's expressions (params.yaml: rig.expressions)
ALIGNED_PX = 112  # align.crop_size
TAKE_FRAMES = 16  # frames per take of the default capture
TAKES_PER_SUBJECT = 8


class Clock:
    """CPU seconds of this process on a CPU (a busy machine disturbs them less); wall seconds on CUDA."""

    def __init__(self, dev: torch.device) -> None:
        self.cuda = dev.type == "cuda"
        self.kind = "wall seconds (CUDA synchronised)" if self.cuda else "CPU seconds of this process"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def time(self, fn: Callable[..., R], *args: Any) -> tuple[R, float]:
        t = self.now()
        out = fn(*args)
        return out, self.now() - t


# ---- synthetic input ------------------------------------------------------------------------------------------


def aligned_project(root: Path, subjects: int, seed: int = 0) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """Aligned takes (random 112 px frames, about 5 % missing faces) of `subjects` subjects and one fold:
    the last subject tested, the one before validated, the rest trained on. Returns (fold, meta)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    meta: dict[str, dict[str, str]] = {}
    for s in range(subjects):
        for k in range(TAKES_PER_SUBJECT):
            take = f"s{s:03d}_t{k}"
            frames = rng.integers(0, 256, (TAKE_FRAMES, ALIGNED_PX, ALIGNED_PX, 3), dtype=np.uint8)
            valid = rng.random(TAKE_FRAMES) > 0.05
            valid[0] = True
            io.write_npz(root / f"{take}.npz", {"frames": frames, "valid": valid})
            meta[take] = {"mode": "frontal" if k % 2 else "yaw30", "subject_id": f"sub-{s:03d}"}
    by = lambda subs: sorted(t for t, m in meta.items() if m["subject_id"] in subs)  # noqa: E731
    names = [f"sub-{s:03d}" for s in range(subjects)]
    fold = {"fold": 0, "train": by(names[:-2]), "val": by(names[-2:-1]), "test_seen": by(names[-1:])}
    return fold, meta


def feature_data(n_train: int, n_val: int, dim: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A ragged feature file's arrays as `features` writes them (takes of 16 frames, about 5 % missing) and a fold."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val
    ids = np.array([f"t{i:05d}" for i in range(n)])
    valid = rng.random(n * TAKE_FRAMES) > 0.05
    offsets = np.arange(0, n * TAKE_FRAMES + 1, TAKE_FRAMES, dtype=np.int64)
    x = rng.standard_normal((n * TAKE_FRAMES, dim)).astype(np.float32)
    x[~valid] = 0.0
    data = {
        "take_ids": ids,
        "offsets": offsets,
        "valid": valid,
        "lengths": feat.lengths_of(valid, offsets),
        "labels": rng.integers(0, N_CLASSES, n).astype(np.int64),
        "modes": np.array(["frontal" if i % 2 else "yaw30" for i in range(n)]),
        "subjects": np.array([f"sub-{i // TAKES_PER_SUBJECT:03d}" for i in range(n)]),
        "features": x,
        "train_mean": np.zeros(dim, np.float32),
        "train_std": np.ones(dim, np.float32),
    }
    fold = {"fold": 0, "train": list(ids[:n_train]), "val": list(ids[n_train:]), "test_seen": []}
    return data, fold


# ---- features -------------------------------------------------------------------------------------------------


class CNNFloor:
    """The stage's FrameCNN (channels-last) and `n_frames` float frames in [-0.5, 0.5] already on the device:
    everything a floor needs, built before the clock starts."""

    def __init__(self, p: FeaturesParams, channels: int, n_frames: int, dev: torch.device, seed: int) -> None:
        self.p, self.n = p, n_frames
        model = FrameCNN(N_CLASSES, p.feature_dim, channels)
        self.model = model.to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]  # (stubs lack it)
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand((n_frames, channels, p.input_size, p.input_size), generator=gen).sub_(0.5)
        self.x = x.to(dev).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, N_CLASSES, (n_frames,), generator=gen).to(dev)

    def train(self, epochs: int, n: int) -> None:
        """Forward + cross-entropy + backward, batches of `features.batch_size`, `epochs` times over `n` frames."""
        self.model.train()
        bs = self.p.batch_size
        for _ in range(epochs):
            for s in range(0, n, bs):
                F.cross_entropy(self.model(self.x[s : min(s + bs, n)]), self.y[s : min(s + bs, n)]).backward()

    def train_each(self, epochs: int, sizes: list[int]) -> None:
        """`train` once per cross-fitted CNN (each on its own frames)."""
        for n in sizes:
            self.train(epochs, n)

    def encode(self, n: int) -> None:
        """Forward (features, then the head for logits) under inference_mode, batches of ENCODE_BATCH, `n` frames."""
        self.model.eval()
        with torch.inference_mode():
            for s in range(0, n, ENCODE_BATCH):
                f = self.model.features(self.x[s : min(s + ENCODE_BATCH, n)])
                if self.p.encoding == "logits":
                    self.model.head(f)


def crossfit_frames(job: feat.Job, frames: np.ndarray) -> list[int]:
    """Frames each CNN of `job` trains on per epoch (the K cross-fitted ones, split as `run_job` splits them)."""
    p, fold = job.params, job.fold
    train_ids = list(fold["train"])
    if not p.crossfit_folds:
        return [len(feat.training_frames(frames, job.cache, train_ids, job.labels, p.frames_per_take).labels)]
    subjects = sorted({job.meta[t]["subject_id"] for t in train_ids})
    sizes = []
    for held in feat.subject_groups(subjects, p.crossfit_folds, job.seed + 1000 * fold["fold"]):
        fit_ids = [t for t in train_ids if job.meta[t]["subject_id"] not in set(held)]
        sizes.append(len(feat.training_frames(frames, job.cache, fit_ids, job.labels, p.frames_per_take).labels))
    return sizes


def bench_features(
    p: FeaturesParams, subjects: int, repeats: int, tmp: Path, clock: Clock, dev: torch.device
) -> dict[str, Any]:
    backend = p.backends[0]
    fold, meta = aligned_project(tmp / "aligned", subjects)
    ids = sorted(meta)
    cache, decode_s = clock.time(feat.cache_frames, tmp / "aligned", ids, p.input_size, tmp / "frames.npy")
    frames = cache.load()
    rng = np.random.default_rng(0)
    labels = {t: int(rng.integers(0, N_CLASSES)) for t in ids}
    train = feat.training_frames(frames, cache, fold["train"], labels, p.frames_per_take)
    val = feat.training_frames(frames, cache, fold["val"], labels, p.frames_per_take)
    logits = p.encoding == "logits"
    cnn = make_backend(
        backend, input_size=p.input_size, feature_dim=p.feature_dim, epochs=1, batch_size=p.batch_size, lr=p.lr
    )
    if not isinstance(cnn, CNNBackend):
        raise SystemExit(f"features.backends[0] = {backend}: not a CNN backend (nothing trained to benchmark)")
    channels = cnn.channels
    n_fit, n_enc = len(train.labels), int(cache.valid.sum())
    job = feat.Job(p, backend, 0, fold, labels, N_CLASSES, cache, tmp / "features" / "fold0.npz", meta)
    sizes = crossfit_frames(job, frames)
    floor = CNNFloor(p, channels, max(n_fit, n_enc, *sizes), dev, seed=0)
    # warm-up (oneDNN primitives, allocator) for the stage's code and the floors alike
    small = feat.TrainingFrames(*(a[: 2 * p.batch_size] for a in (train.frames, train.refs, train.labels)))
    cnn.fit(small, small, N_CLASSES, 0)
    feat.encode_takes([cnn], frames, cache, ids[:2], logits)
    floor.train(1, 2 * p.batch_size)
    floor.encode(64)

    secs: dict[str, list[float]] = {}
    threads = torch.get_num_threads()
    for _ in range(repeats):  # interleaved, so a busy machine slows every row alike; the fastest repeat is kept
        fitted = make_backend(
            backend,
            input_size=p.input_size,
            feature_dim=p.feature_dim,
            epochs=p.epochs,
            batch_size=p.batch_size,
            lr=p.lr,
        )
        secs.setdefault("fit", []).append(clock.time(fitted.fit, train, val, N_CLASSES, 0)[1])
        secs.setdefault("floor fit", []).append(clock.time(floor.train, p.epochs, n_fit)[1])
        secs.setdefault("encode", []).append(clock.time(feat.encode_takes, [fitted], frames, cache, ids, logits)[1])
        secs.setdefault("floor encode", []).append(clock.time(floor.encode, n_enc)[1])
        try:
            result, job_s = clock.time(feat.run_job, job)  # (run_job sets one thread, as in a worker)
        finally:
            torch.set_num_threads(threads)
        secs.setdefault("job", []).append(job_s)
        _, train_s = clock.time(floor.train_each, p.epochs, sizes)
        secs.setdefault("floor job", []).append(train_s + clock.time(floor.encode, int(result["frames_encoded"]))[1])
    best = {k: min(v) for k, v in secs.items()}
    n_job = sum(sizes) * p.epochs + int(result["frames_encoded"])
    return {
        "backend": backend,
        "input_size": p.input_size,
        "channels": channels,
        "takes": len(ids),
        "frames": len(cache.valid),
        "decode_frames_per_s": round(len(cache.valid) / decode_s, 1),
        "rows": [
            _row("fit (CNNBackend.fit)", n_fit * p.epochs, best["fit"], best["floor fit"], "floor: training"),
            _row("encode (encode_takes)", n_enc, best["encode"], best["floor encode"], "floor: encoding"),
            _row(f"extractor (run_job, K={len(sizes)})", n_job, best["job"], best["floor job"], "training+encoding"),
        ],
    }


# ---- train ----------------------------------------------------------------------------------------------------


def floor_fit(
    model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor, bs: int, epochs: int
) -> None:
    """The bare sequence classifier's forward + cross-entropy + backward over in-memory padded batches."""
    model.train()
    for _ in range(epochs):
        for s in range(0, len(y), bs):
            F.cross_entropy(model(x[s : s + bs], lengths[s : s + bs])["logits"], y[s : s + bs]).backward()


def reference_lstm(lstm: torch.nn.LSTM, x: torch.Tensor, bs: int, epochs: int) -> None:
    """torch.nn.LSTM forward + backward of its outputs' sum on the same padded batches (no packing, no head)."""
    for _ in range(epochs):
        for s in range(0, len(x), bs):
            lstm(x[s : s + bs])[0].sum().backward()


def bench_train(
    fp: FeaturesParams,
    p: TrainParams,
    variants: list[str],
    n_train: int,
    repeats: int,
    tmp: Path,
    clock: Clock,
    dev: torch.device,
) -> dict[str, Any]:
    dim = N_CLASSES if fp.encoding == "logits" else fp.feature_dim
    data, fold = feature_data(n_train, max(8, n_train // 10), dim)
    root = tmp / "features"
    feat.save_npz(feature_file(fp.protocol, fp.backends[0], 0, 0, root), data)
    x, lengths, y = tr.take_tensors(data, fold["train"], dev)
    lstm = torch.nn.LSTM(dim, p.hidden, batch_first=True).to(dev)
    reference_lstm(lstm, x, p.batch_size, 1)  # warm-up
    rows = []
    threads = torch.get_num_threads()
    for variant in variants:
        job = tr.Job(fp.protocol, fp.backends[0], 0, variant, fold, 0, 0, N_CLASSES, root, tmp / f"{variant}.pt", p)
        seed_everything(0)
        model = make_model(variant, input_size=dim, hidden=p.hidden, n_classes=N_CLASSES, dropout=p.dropout).to(dev)
        floor_fit(model, x, lengths, y, p.batch_size, 1)  # warm-up (and the compiled scan loaded)
        tr.run_job(replace(job, params=p.model_copy(update={"epochs": 1})))
        torch.set_num_threads(threads)
        secs: dict[str, list[float]] = {"stage": [], "floor": [], "reference": []}
        for _ in range(repeats):  # interleaved; the fastest repeat is kept
            try:
                (curve, _), stage_s = clock.time(tr.run_job, job)  # (run_job sets one thread, as in a worker)
            finally:
                torch.set_num_threads(threads)
            epochs = len(curve)  # patience = epochs: every epoch runs
            secs["stage"].append(stage_s)
            secs["floor"].append(clock.time(floor_fit, model, x, lengths, y, p.batch_size, epochs)[1])
            secs["reference"].append(clock.time(reference_lstm, lstm, x, p.batch_size, epochs)[1])
        best = {k: min(v) for k, v in secs.items()}
        n = len(y) * epochs
        row = _row(f"{variant} (run_job)", n, best["stage"], best["floor"], "floor: bare model")
        row.update(
            reference_per_s=round(n / best["reference"], 1),
            floor_x_reference=round(best["floor"] / best["reference"], 2),
        )
        rows.append(row)
    return {
        "sequences": len(y),
        "frames": int(x.shape[1]),
        "input_size": dim,
        "hidden": p.hidden,
        "batch_size": p.batch_size,
        "mv_scan": mv_scan_native.implementation(),
        "rows": rows,
    }


# ---- report ---------------------------------------------------------------------------------------------------


def _row(name: str, n: int, stage_s: float, floor_s: float, floor: str) -> dict[str, Any]:
    return {
        "row": name,
        "items": n,
        "stage_s": round(stage_s, 4),
        "stage_per_s": round(n / stage_s, 1),
        "floor": floor,
        "floor_s": round(floor_s, 4),
        "floor_per_s": round(n / floor_s, 1),
        "x_floor": round(stage_s / floor_s, 2),
    }


def _table(rows: list[dict[str, Any]], unit: str, reference: bool = False) -> None:
    head = (
        f"{'row':<30} {unit:>9} {'stage ' + unit + '/s':>16} {'floor':>17} {'floor ' + unit + '/s':>16} {'x floor':>8}"
    )
    if reference:
        head += f" {'nn.LSTM ' + unit + '/s':>18} {'floor x nn.LSTM':>16}"
    print(head)
    for r in rows:
        line = (
            f"{r['row']:<30} {r['items']:>9} {r['stage_per_s']:>16.1f} {r['floor']:>17} "
            f"{r['floor_per_s']:>16.1f} {r['x_floor']:>8.2f}"
        )
        if reference:
            line += f" {r['reference_per_s']:>18.1f} {r['floor_x_reference']:>16.2f}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="input size: 1 = 12 subjects x 8 takes for features, 512 sequences for train",
    )
    ap.add_argument("--epochs", type=int, help="CNN epochs (default features.epochs)")
    ap.add_argument("--train-epochs", type=int, default=8, help="sequence-model epochs (default 8; patience = epochs)")
    ap.add_argument("--variants", nargs="+", default=["lstm", "mv_lstm"], help="train variants (default lstm mv_lstm)")
    ap.add_argument(
        "--repeats", type=int, default=1, help="interleaved repeats; each row keeps its fastest (default 1)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as each stage worker)")
    ap.add_argument("--json", type=Path, help="also write the figures here (e.g. reports/bench/learn.json)")
    args = ap.parse_args()
    logging.basicConfig(level="WARNING")
    torch.set_num_threads(args.threads)
    params = load_params(Layout.discover().params_file)
    fp = params.features.model_copy(update={"epochs": args.epochs or params.features.epochs})
    tp = params.train.model_copy(update={"epochs": args.train_epochs, "patience": args.train_epochs, "search": {}})
    subjects = max(fp.crossfit_folds + 2, round(12 * args.scale))
    n_seq = max(2 * tp.batch_size, round(512 * args.scale))
    dev = device()
    clock = Clock(dev)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp:
        f = bench_features(fp, subjects, args.repeats, Path(tmp), clock, dev)
        t = bench_train(fp, tp, args.variants, n_seq, args.repeats, Path(tmp), clock, dev)
    where = f"{dev}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {clock.kind}"
    print(
        f"features: {f['takes']} takes, {f['frames']} frames ({subjects} subjects), backend {f['backend']} "
        f"({f['channels']} channels, {fp.input_size} px), batch {fp.batch_size} (encoding {ENCODE_BATCH}), "
        f"{fp.epochs} epochs, crossfit_folds {fp.crossfit_folds}, encoding {fp.encoding}; {where}\n"
        "  floor: training = the same FrameCNN (channels-last) forward + cross-entropy + backward on float tensors "
        "in memory, same batch, as many frames (no conversion, augmentation, optimiser step or validation)\n"
        "  floor: encoding = the same FrameCNN's forward under inference_mode on float tensors in memory, "
        f"batches of {ENCODE_BATCH}\n"
        "  extractor floor = the training floor once per cross-fitted CNN on as many frames as it trains on + the "
        "encoding floor on as many frames as the extractor encodes"
    )
    _table(f["rows"], "frames")
    print(f"  (decoding the aligned takes, cache_frames, not in the rows: {f['decode_frames_per_s']:.1f} frames/s)")
    print(
        f"\ntrain: {t['sequences']} training sequences of {t['frames']} frames x {t['input_size']} features, "
        f"hidden {t['hidden']}, batch {t['batch_size']}, {tp.epochs} epochs; MV-LSTM scan: {t['mv_scan']}; {where}\n"
        "  floor: bare model = make_model(variant) in train mode, forward + cross-entropy + backward on the padded "
        "training tensors in memory, same batch, as many sequences (no optimiser, clipping, validation or I/O)\n"
        "  reference: torch.nn.LSTM of the same input and hidden size, forward + backward of its outputs' sum on the "
        "same padded batches (no packing, no head)"
    )
    _table(t["rows"], "seqs", reference=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        figures = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None),
            "load_1min": [round(load[0], 2), round(os.getloadavg()[0], 2)],
            "commit": git_commit(ROOT, "pipeline/learn", "pipeline/models"),
            "device": str(dev),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "clock": clock.kind,
            "scale": args.scale,
            "repeats": args.repeats,
            "features": f | {"epochs": fp.epochs, "batch_size": fp.batch_size, "crossfit_folds": fp.crossfit_folds},
            "train": t | {"epochs": tp.epochs},
        }
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
