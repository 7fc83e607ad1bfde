"""The features stage: a small CNN per fold, trained on that fold's training subjects only.

Each fold's CNN sees only its training takes (the last `frames_per_take` found frames of each,
labelled with the take's label), is checked on validation frames, and then encodes every frame of
every take in the fold. Nothing about the test subjects reaches the weights.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import paths, vocab
from pipeline.learn.common import device, feature_file, load_split, load_takes, seed_everything
from pipeline.models.frame_cnn import FrameCNN
from pipeline.params import FeaturesParams
from pipeline.utils import io

log = logging.getLogger(__name__)
SPLIT_NAMES = vocab.SPLITS


def load_frames(take_ids: list[str], size: int, aligned: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, T, 3, size, size) uint8 and validity (N, T), padded to the longest take."""
    clips, valid = [], []
    for t in take_ids:
        with np.load(aligned / f"{t}.npz") as z:
            frames, v = z["frames"], z["valid"]
        clips.append(np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]).transpose(0, 3, 1, 2))
        valid.append(v)
    T = max(len(v) for v in valid)
    out = np.zeros((len(take_ids), T, 3, size, size), np.uint8)
    mask = np.zeros((len(take_ids), T), bool)
    for i, (c, v) in enumerate(zip(clips, valid)):
        out[i, : len(c)], mask[i, : len(v)] = c, v
    return out, mask


def _to_input(x: np.ndarray | torch.Tensor, dev: torch.device) -> torch.Tensor:
    return torch.as_tensor(x, device=dev).float().div_(255.0).sub_(0.5)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small shifts and brightness/contrast jitter: regularises a CNN trained on ~1,000 frames."""
    pad = 4
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=gen))
    x = xp[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    gain = 1 + 0.2 * (torch.rand((x.shape[0], 1, 1, 1), generator=gen) - 0.5)
    bias = 0.1 * (torch.rand((x.shape[0], 1, 1, 1), generator=gen) - 0.5)
    return (x * gain.to(x.device) + bias.to(x.device)).clamp(-0.5, 0.5)


def training_frames(frames: np.ndarray, valid: np.ndarray, labels: np.ndarray, per_take: int) -> tuple[np.ndarray, np.ndarray]:
    """The last `per_take` found frames of each take, with its label: where the expression is."""
    xs, ys = [], []
    for clip, v, y in zip(frames, valid, labels):
        idx = np.flatnonzero(v)[-per_take:]
        xs.append(clip[idx])
        ys.append(np.full(len(idx), y))
    return np.concatenate(xs), np.concatenate(ys)


def train_cnn(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, n_classes: int, p: FeaturesParams, seed: int) -> tuple[FrameCNN, dict]:
    dev = device()
    gen = seed_everything(seed)
    model = FrameCNN(n_classes, p.feature_dim).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs)
    history = []
    for epoch in range(p.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for s in range(0, len(x), p.batch_size):
            b = order[s : s + p.batch_size].numpy()
            xb = _augment(_to_input(x[b], dev), gen)
            loss = F.cross_entropy(model(xb), torch.as_tensor(y[b], device=dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        history.append({"epoch": epoch, "loss": total / len(x), "val_frame_acc": frame_accuracy(model, xv, yv)})
    return model, {"history": history, "val_frame_acc": history[-1]["val_frame_acc"]}


@torch.inference_mode()
def frame_accuracy(model: FrameCNN, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    dev = next(model.parameters()).device
    pred = torch.cat([model(_to_input(x[s : s + 256], dev)).argmax(1).cpu() for s in range(0, len(x), 256)])
    return float((pred.numpy() == y).mean()) if len(y) else float("nan")


@torch.inference_mode()
def encode(model: FrameCNN, frames: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, T, D) features; frames with no face are zero."""
    model.eval()
    dev = next(model.parameters()).device
    N, T = frames.shape[:2]
    flat = frames.reshape(N * T, *frames.shape[2:])
    feats = torch.cat([model.features(_to_input(flat[s : s + 256], dev)).cpu() for s in range(0, len(flat), 256)])
    feats = feats.reshape(N, T, -1).numpy()
    return feats * valid[..., None]


def run(p: FeaturesParams, split_dir: Path = paths.SPLITS, aligned: Path = paths.ALIGNED,
        out_root: Path = paths.FEATURES, report_path: Path = paths.FEATURES_REPORT) -> dict:
    split, takes = load_split(p.protocol, split_dir), load_takes(split_dir)
    classes = split["classes"]
    cls = {c: i for i, c in enumerate(classes)}
    report = {"protocol": p.protocol, "classes": classes, "folds": []}
    fold_ids = [sorted({t for k in SPLIT_NAMES for t in fold.get(k, [])}) for fold in split["folds"]]
    every = sorted(set().union(*fold_ids))
    all_frames, all_valid = load_frames(every, p.input_size, aligned)  # once: the folds share most takes
    where = {t: i for i, t in enumerate(every)}
    for fold, ids in zip(tqdm(split["folds"], desc="features", unit="fold"), fold_ids):
        t0 = time.perf_counter()
        rows = np.array([where[t] for t in ids])
        frames, valid = all_frames[rows], all_valid[rows]
        index = {t: i for i, t in enumerate(ids)}
        labels = np.array([cls[takes.loc[t, "label"]] for t in ids])
        tr = np.array([index[t] for t in fold["train"]])
        va = np.array([index[t] for t in fold["val"]])
        x, y = training_frames(frames[tr], valid[tr], labels[tr], p.frames_per_take)
        xv, yv = training_frames(frames[va], valid[va], labels[va], p.frames_per_take)
        model, info = train_cnn(x, y, xv, yv, len(classes), p, p.seed + 1000 * fold["fold"])
        feats = encode(model, frames, valid)
        out = feature_file(p.protocol, fold["fold"], out_root)
        with io.atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, take_ids=np.array(ids), features=feats.astype(np.float32), valid=valid,
                     lengths=valid.shape[1] - np.argmax(valid[:, ::-1], axis=1) * valid.any(1),
                     labels=labels, modes=np.array([takes.loc[t, "mode"] for t in ids]),
                     subjects=np.array([takes.loc[t, "subject_id"] for t in ids]))
        report["folds"].append({"fold": fold["fold"], "train_frames": len(x), "val_frame_acc": round(info["val_frame_acc"], 4),
                                "takes_encoded": len(ids), "seconds": round(time.perf_counter() - t0, 1), "history": info["history"]})
        log.info("features fold %d: CNN val frame accuracy %.3f on %d frames (%.1f s)", fold["fold"], info["val_frame_acc"], len(yv), time.perf_counter() - t0)
    io.write_json(report_path, report)
    return report
