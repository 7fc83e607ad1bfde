"""The train stage: every feature backend x variant x seed x fold, early-stopped on validation.

Every variant gets the same features, hidden size, optimiser, epochs, patience and settings search:
the only difference is the sequence model (and, for `mv_lstm_sup`, the mode heads). Sequence-model
seed s is run i (its position in `train.seeds`) and uses feature-extractor seed
`features.seeds[i % n]`, so the paired comparison of two variants in one run shares its features;
with as many extractor seeds as runs every run is an independent replicate (its own extractor).

Selection on validation only: `train.search` is a grid of settings (learning rate, patience, loss
weights, ...); each fit tries every setting, early-stops each on the validation subjects and keeps the
one with the lowest validation loss. The grid is the same for every variant, so each gets the same
budget; the test takes are never read here. Fits run in `train.workers` processes with one thread
each (one process on a GPU); a fit's result does not depend on how many run beside it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.layout import Layout
from pipeline.learn.common import device, feature_seed, load_features, load_split, seed_everything
from pipeline.models import mv_scan_native
from pipeline.models.registry import PARAMS_KEY, VARIANTS, make_model, modes_needed
from pipeline.parallel import Executor, pmap
from pipeline.params import FeaturesParams, Params, TrainParams
from pipeline.stage import main, with_provenance
from pipeline.utils import io
from pipeline.utils.log import setup_logging

log = logging.getLogger(__name__)


def checkpoint_path(protocol: str, backend: str, variant: str, fold: int, seed: int, root: Path) -> Path:
    return root / protocol / backend / variant / f"fold{fold}_seed{seed}.pt"


def take_tensors(
    data: dict[str, np.ndarray], ids: list[str], dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, D) features padded to the longest of `ids` only, lengths, labels, from the ragged file."""
    index = {t: i for i, t in enumerate(data["take_ids"])}
    rows = np.array([index[t] for t in ids], dtype=np.int64)
    offs, feats = data["offsets"], data["features"]
    lengths = np.maximum(data["lengths"][rows], 1)
    x = np.zeros((len(rows), int(lengths.max()) if len(rows) else 1, feats.shape[1]), np.float32)
    for j, (r, n) in enumerate(zip(rows, lengths)):
        seq = feats[offs[r] : offs[r + 1]][:n]
        x[j, : len(seq)] = seq
    return (
        torch.as_tensor(x, device=dev),
        torch.as_tensor(lengths, dtype=torch.long),
        torch.as_tensor(data["labels"][rows], dtype=torch.long, device=dev),
    )


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and its softmax probability per take."""
    model.eval()
    prob = torch.softmax(model(x, lengths)["logits"], 1)
    conf, pred = prob.max(1)
    return pred.cpu().numpy(), conf.cpu().numpy()


def fit(
    variant: str, data: dict[str, np.ndarray], fold: dict, p: TrainParams, seed: int, n_classes: int
) -> tuple[dict, list[dict], int]:
    """Train one model; returns (best state dict, learning curve, best epoch)."""
    dev = device()
    gen = seed_everything(seed)
    x, lengths, y = take_tensors(data, fold["train"], dev)
    xv, lv, yv = take_tensors(data, fold["val"], dev)
    index = {t: i for i, t in enumerate(data["take_ids"])}
    train_modes = [str(data["modes"][index[t]]) for t in fold["train"]]
    mode_names = sorted(set(train_modes))
    m = torch.as_tensor([mode_names.index(s) for s in train_modes], dtype=torch.long, device=dev)
    model = make_model(
        variant,
        input_size=x.shape[-1],
        hidden=p.hidden,
        n_classes=n_classes,
        n_modes=modes_needed(variant, mode_names),
        dropout=p.dropout,
        adversarial_weight=p.adversarial_weight,
    ).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    best, best_acc, best_loss, best_epoch, waited = None, -1.0, float("inf"), -1, 0
    history = []
    for epoch in range(p.epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for s in range(0, len(y), p.batch_size):
            b = order[s : s + p.batch_size]
            out = model(x[b], lengths[b])
            loss = F.cross_entropy(out["logits"], y[b])
            if "mode_logits" in out:
                loss = (
                    loss
                    + p.mode_loss_weight * F.cross_entropy(out["mode_logits"], m[b])
                    + F.cross_entropy(out["adv_logits"], m[b])
                )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            total += float(loss.detach()) * len(b)
        model.eval()
        with torch.inference_mode():
            logits = model(xv, lv)["logits"]
            val_loss = float(F.cross_entropy(logits, yv))
            val_acc = float((logits.argmax(1) == yv).float().mean())
        history.append({"epoch": epoch, "train_loss": total / len(y), "val_loss": val_loss, "val_acc": val_acc})
        if val_acc > best_acc or (val_acc == best_acc and val_loss < best_loss):
            best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            best_acc, best_loss, best_epoch, waited = val_acc, val_loss, epoch, 0
        else:
            waited += 1
            if waited >= p.patience:
                break
    return (
        {
            "state_dict": best,
            "variant": variant,
            "n_classes": n_classes,
            "mode_names": mode_names,
            "input_size": int(x.shape[-1]),
            "best_epoch": best_epoch,
            "val_acc": best_acc,
            "val_loss": best_loss,
        },
        history,
        best_epoch,
    )


SEARCHABLE = ("lr", "weight_decay", "dropout", "patience", "mode_loss_weight", "adversarial_weight")


def settings(p: TrainParams) -> list[dict[str, float]]:
    """The grid of `train.search` (every combination, keys in a fixed order); one empty setting without a search."""
    keys = [k for k in SEARCHABLE if k in p.search]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(p.search[k] for k in keys))]


def with_setting(p: TrainParams, setting: dict[str, float]) -> TrainParams:
    """`p` with one setting of the search applied (patience is a whole number of epochs)."""
    return p.model_copy(update={k: int(v) if k == "patience" else float(v) for k, v in setting.items()})


def select(
    variant: str, data: dict[str, np.ndarray], fold: dict, p: TrainParams, seed: int, n_classes: int
) -> tuple[dict, list[dict]]:
    """Fit every setting of the search with the same seed; keep the lowest validation loss (ties: the first).

    Returns the kept checkpoint (with its setting) and every setting's learning curve rows, marked `selected`."""
    grid = settings(p)
    fits = [fit(variant, data, fold, with_setting(p, setting), seed, n_classes) for setting in grid]
    chosen = min(range(len(grid)), key=lambda i: (fits[i][0]["val_loss"], i))
    rows = [
        {"setting": i, "selected": i == chosen, **{f"search_{k}": v for k, v in grid[i].items()}, **h}
        for i, (_, history, _) in enumerate(fits)
        for h in history
    ]
    return {**fits[chosen][0], "setting": grid[chosen]}, rows


Saver = Callable[[dict[str, Any], Path], None]


def save_checkpoint(ckpt: dict[str, Any], path: Path) -> None:
    """torch.save into the stage's temporary models folder (swapped in whole at the end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


@dataclass(frozen=True)
class Job:
    """One model fit: which features, which variant, which seed, where the checkpoint goes."""

    protocol: str
    backend: str
    feature_seed: int
    variant: str
    fold: dict[str, Any]
    seed: int
    run: int  # the seed's position in train.seeds: one training run (one extractor seed)
    n_classes: int
    features_root: Path
    checkpoint: Path
    params: TrainParams
    save: Saver = save_checkpoint  # a module-level function (the job goes to a spawned worker)


def _worker_init() -> None:
    """One thread per fit (tiny models: threads only contend), the CLI's log format."""
    torch.set_num_threads(1)
    setup_logging()


def run_job(job: Job) -> tuple[list[dict[str, Any]], frozenset[str]]:
    """Fit (every setting of the search), save the kept checkpoint; the learning curve rows and the MV-LSTM scans
    this process ran (runs in a worker)."""
    torch.set_num_threads(1)
    data = load_features(job.protocol, job.backend, job.feature_seed, job.fold["fold"], job.features_root)
    ckpt, history = select(job.variant, data, job.fold, job.params, job.seed, job.n_classes)
    ckpt.update(backend=job.backend, feature_seed=job.feature_seed, run=job.run)
    job.save(ckpt, job.checkpoint)
    rows = [
        {
            "backend": job.backend,
            "variant": job.variant,
            "fold": job.fold["fold"],
            "seed": job.seed,
            "run": job.run,
            "feature_seed": job.feature_seed,
            **h,
        }
        for h in history
    ]
    return rows, mv_scan_native.used()


def jobs_for(
    p: TrainParams,
    fp: FeaturesParams,
    split: dict[str, Any],
    features_root: Path,
    models_root: Path,
    save: Saver = save_checkpoint,
) -> list[Job]:
    """Every backend x variant x fold x seed (this order)."""
    n_classes = len(split["classes"])
    return [
        Job(
            fp.protocol,
            b,
            feature_seed(s, p.seeds, fp.seeds),
            v,
            fold,
            s,
            p.seeds.index(s),
            n_classes,
            features_root,
            checkpoint_path(fp.protocol, b, v, fold["fold"], s, models_root),
            p,
            save,
        )
        for b in fp.backends
        for v in p.variants
        for fold in split["folds"]
        for s in p.seeds
    ]


def train_all(jobs: list[Job], workers: int) -> tuple[pd.DataFrame, frozenset[str]]:
    """Every fit, in `workers` spawned processes (1: here, this process's thread count restored after):
    the learning curves in job order and the MV-LSTM scans that ran."""
    threads = torch.get_num_threads()
    try:
        results = list(
            pmap(run_job, jobs, Executor("local", workers), desc="train", unit="model", initializer=_worker_init)
        )
    finally:
        torch.set_num_threads(threads)
    curves = pd.DataFrame([row for rows, _ in results for row in rows])
    return curves, frozenset().union(*(scans for _, scans in results))


def run(layout: Layout, params: Params, *, save: Saver = save_checkpoint) -> None:
    """Stage `train`: splits and features in; models/ (with models/provenance.json) and the learning curves out.

    `save` writes one checkpoint (tests inject a failing one to see a full disk stop the stage).
    """
    p, fp = params.train, params.features
    VARIANTS.check(p.variants, PARAMS_KEY)
    split = load_split(fp.protocol, layout.splits)
    workers = 1 if device().type == "cuda" else p.workers  # one process drives the GPU
    t0 = time.perf_counter()
    with io.atomic_dir(layout.models) as tmp_root:
        jobs = jobs_for(p, fp, split, layout.features, tmp_root, save)
        curves, scans = train_all(jobs, workers)
        # train writes no report: what trained the models goes with them (a plot CSV must stay a plain table)
        io.write_json(
            tmp_root / layout.models_provenance.relative_to(layout.models),
            with_provenance(
                {"models": len(jobs)},
                params,
                "features.protocol",
                "features.backends",
                "features.seeds",
                "train",
                threads=1,
                workers=workers,
                device=str(device()),
                settings=len(settings(p)),
                mv_scan=mv_scan_native.describe(scans),
            ),
        )
    io.write_csv(layout.learning_curves, curves)
    log.info(
        "trained %d models (%d setting(s) each) in %.1f s with %d worker(s)",
        len(jobs),
        len(settings(p)),
        time.perf_counter() - t0,
        workers,
    )


if __name__ == "__main__":
    # the shell of the module by its name, so that workers unpickle its jobs from it (not from __main__)
    from pipeline.learn.train import run

    raise SystemExit(main(run))
