"""The train stage: every feature backend x variant x seed x fold, early-stopped on validation.

Every variant gets the same features, hidden size, optimiser, epochs and patience: the only
difference is the recurrent cell (and, for `mv_lstm_sup`, the mode heads). Sequence-model seed s
uses feature-extractor seed `features.seeds[i % n]` (i: the position of s in `train.seeds`), so the
paired comparison of two variants at one seed shares its features. Fits run in `train.workers`
processes with one thread each; a fit's result does not depend on how many run beside it.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import paths
from pipeline.learn.common import device, feature_seed, load_features, load_split, seed_everything
from pipeline.models import make_model
from pipeline.params import FeaturesParams, TrainParams
from pipeline.utils import io
from pipeline.utils.log import setup_logging

log = logging.getLogger(__name__)


def checkpoint_path(protocol: str, backend: str, variant: str, fold: int, seed: int, root: Path = paths.MODELS) -> Path:
    return root / protocol / backend / variant / f"fold{fold}_seed{seed}.pt"


def take_tensors(data: dict[str, np.ndarray], ids: list[str], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, D) features padded to the longest of `ids` only, lengths, labels, from the ragged file."""
    index = {t: i for i, t in enumerate(data["take_ids"])}
    rows = np.array([index[t] for t in ids], dtype=np.int64)
    offs, feats = data["offsets"], data["features"]
    lengths = np.maximum(data["lengths"][rows], 1)
    x = np.zeros((len(rows), int(lengths.max()) if len(rows) else 1, feats.shape[1]), np.float32)
    for j, (r, n) in enumerate(zip(rows, lengths)):
        seq = feats[offs[r] : offs[r + 1]][:n]
        x[j, : len(seq)] = seq
    return (torch.as_tensor(x, device=dev), torch.as_tensor(lengths, dtype=torch.long),
            torch.as_tensor(data["labels"][rows], dtype=torch.long, device=dev))


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and its softmax probability per take."""
    model.eval()
    prob = torch.softmax(model(x, lengths)["logits"], 1)
    conf, pred = prob.max(1)
    return pred.cpu().numpy(), conf.cpu().numpy()


def fit(variant: str, data: dict[str, np.ndarray], fold: dict, p: TrainParams, seed: int, n_classes: int) -> tuple[dict, list[dict], int]:
    """Train one model; returns (best state dict, learning curve, best epoch)."""
    dev = device()
    gen = seed_everything(seed)
    x, lengths, y = take_tensors(data, fold["train"], dev)
    xv, lv, yv = take_tensors(data, fold["val"], dev)
    index = {t: i for i, t in enumerate(data["take_ids"])}
    train_modes = [str(data["modes"][index[t]]) for t in fold["train"]]
    mode_names = sorted(set(train_modes))
    m = torch.as_tensor([mode_names.index(s) for s in train_modes], dtype=torch.long, device=dev)
    model = make_model(variant, input_size=x.shape[-1], hidden=p.hidden, n_classes=n_classes,
                       n_modes=len(mode_names) if variant == "mv_lstm_sup" else 0,
                       dropout=p.dropout, adversarial_weight=p.adversarial_weight).to(dev)
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
                loss = loss + p.mode_loss_weight * F.cross_entropy(out["mode_logits"], m[b]) + F.cross_entropy(out["adv_logits"], m[b])
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
    return {"state_dict": best, "variant": variant, "n_classes": n_classes, "mode_names": mode_names,
            "input_size": int(x.shape[-1]), "best_epoch": best_epoch, "val_acc": best_acc}, history, best_epoch


@dataclass(frozen=True)
class Job:
    """One model fit: which features, which variant, which seed, where the checkpoint goes."""

    protocol: str
    backend: str
    feature_seed: int
    variant: str
    fold: dict
    seed: int
    n_classes: int
    features_root: Path
    checkpoint: Path


def _worker_init() -> None:
    """One thread per fit (tiny models: threads only contend), the CLI's log format."""
    torch.set_num_threads(1)
    setup_logging()


def run_job(job: Job, p: TrainParams) -> list[dict]:
    """Fit, save the checkpoint, return the learning curve rows (runs in a worker)."""
    torch.set_num_threads(1)
    data = load_features(job.protocol, job.backend, job.feature_seed, job.fold["fold"], job.features_root)
    ckpt, history, _ = fit(job.variant, data, job.fold, p, job.seed, job.n_classes)
    ckpt.update(backend=job.backend, feature_seed=job.feature_seed)
    job.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, job.checkpoint)  # inside the stage's temporary models folder, swapped in whole
    return [{"backend": job.backend, "variant": job.variant, "fold": job.fold["fold"], "seed": job.seed, **h} for h in history]


def jobs_for(p: TrainParams, fp: FeaturesParams, split: dict, features_root: Path, models_root: Path) -> list[Job]:
    n_classes = len(split["classes"])
    return [Job(fp.protocol, b, feature_seed(s, p.seeds, fp.seeds), v, fold, s, n_classes, features_root,
                checkpoint_path(fp.protocol, b, v, fold["fold"], s, models_root))
            for b in fp.backends for v in p.variants for fold in split["folds"] for s in p.seeds]


def run(p: TrainParams, fp: FeaturesParams, split_dir: Path = paths.SPLITS, features_root: Path = paths.FEATURES,
        models_root: Path = paths.MODELS, history_path: Path = paths.PLOTS / "learning_curves.csv") -> pd.DataFrame:
    split = load_split(fp.protocol, split_dir)
    t0 = time.perf_counter()
    with io.atomic_dir(models_root) as tmp_root:
        jobs = jobs_for(p, fp, split, features_root, tmp_root)
        if p.workers == 1:
            threads = torch.get_num_threads()
            try:
                results = [run_job(j, p) for j in tqdm(jobs, desc="train", unit="model")]
            finally:
                torch.set_num_threads(threads)
        else:
            with ProcessPoolExecutor(p.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
                results = list(tqdm(pool.map(run_job, jobs, [p] * len(jobs)), total=len(jobs), desc="train", unit="model"))
    curves = pd.DataFrame([row for rows in results for row in rows])
    io.write_csv(history_path, curves)
    log.info("trained %d models in %.1f s with %d worker(s)", len(jobs), time.perf_counter() - t0, p.workers)
    return curves
