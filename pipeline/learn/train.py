"""The train stage: every variant x seed x fold on the protocol's features, early-stopped on val.

Every variant gets the same features, hidden size, optimiser, epochs and patience: the only
difference is the recurrent cell (and, for `mv_lstm_sup`, the mode heads).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import paths
from pipeline.learn.common import device, load_features, load_split, seed_everything
from pipeline.models import make_model
from pipeline.params import TrainParams
from pipeline.utils import io

log = logging.getLogger(__name__)


def checkpoint_path(protocol: str, variant: str, fold: int, seed: int, root: Path = paths.MODELS) -> Path:
    return root / protocol / variant / f"fold{fold}_seed{seed}.pt"


def take_tensors(data: dict[str, np.ndarray], ids: list[str], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    index = {t: i for i, t in enumerate(data["take_ids"])}
    rows = np.array([index[t] for t in ids])
    x = torch.as_tensor(data["features"][rows], device=dev)
    lengths = torch.as_tensor(np.maximum(data["lengths"][rows], 1), dtype=torch.long)
    y = torch.as_tensor(data["labels"][rows], dtype=torch.long, device=dev)
    return x, lengths, y


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, float]:
    model.eval()
    logits = model(x, lengths)["logits"]
    return logits.argmax(1).cpu().numpy(), float(torch.softmax(logits, 1).max(1).values.mean())


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


def run(p: TrainParams, protocol: str, split_dir: Path = paths.SPLITS, features_root: Path = paths.FEATURES,
        models_root: Path = paths.MODELS, history_path: Path = paths.PLOTS / "learning_curves.csv") -> pd.DataFrame:
    split = load_split(protocol, split_dir)
    n_classes = len(split["classes"])
    rows = []
    jobs = [(f, v, s) for f in split["folds"] for v in p.variants for s in p.seeds]
    t0 = time.perf_counter()
    for fold, variant, seed in tqdm(jobs, desc="train", unit="model"):
        data = load_features(protocol, fold["fold"], features_root)
        ckpt, history, best_epoch = fit(variant, data, fold, p, seed, n_classes)
        with io.atomic_path(checkpoint_path(protocol, variant, fold["fold"], seed, models_root), suffix=".pt") as tmp:
            torch.save(ckpt, tmp)
        rows += [{"variant": variant, "fold": fold["fold"], "seed": seed, **h} for h in history]
    curves = pd.DataFrame(rows)
    io.write_csv(history_path, curves)
    log.info("trained %d models in %.1f s", len(jobs), time.perf_counter() - t0)
    return curves
