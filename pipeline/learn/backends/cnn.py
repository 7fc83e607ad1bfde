"""The frame CNN backend, on raw frames (`cnn`), on frames minus the take's first found frame
(`cnn_delta`), or on both stacked (`cnn_pair`, 6 channels).

Subtracting the neutral first frame removes most of who the subject is, which a CNN trained on a
dozen identities otherwise learns instead of the expression. The difference alone, though, has no
anatomy to tell the network where a change sits; the pair gives it the frame as well. The
augmentation (shift, gain) is drawn once per sample and applied to the frame and its reference
alike, so the difference stays a difference of the same face.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.learn.backends.base import BACKENDS, TrainingFrames
from pipeline.learn.backends.frame_cnn import FrameCNN
from pipeline.learn.common import device, seed_everything

_PAD = 4
ENCODE_BATCH = 512  # frames per forward pass when encoding
Inputs = Literal["frame", "delta", "pair"]
INPUTS: dict[Inputs, tuple[str, int]] = {
    "frame": ("cnn", 3),
    "delta": ("cnn_delta", 3),
    "pair": ("cnn_pair", 6),
}  # -> (backend, channels)


def augment_pair(x: torch.Tensor, r: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same shift and brightness/contrast jitter on frames and references (both in [0, 1])."""
    both = torch.cat([x, r], dim=1)
    padded = F.pad(both, (_PAD, _PAD, _PAD, _PAD), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * _PAD + 1, (2,), generator=gen))
    both = padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    gain = 1 + 0.2 * (torch.rand((x.shape[0], 1, 1, 1), generator=gen) - 0.5)
    bias = 0.1 * (torch.rand((x.shape[0], 1, 1, 1), generator=gen) - 0.5)
    both = (both * gain.to(x.device) + bias.to(x.device)).clamp(0.0, 1.0)
    return both[:, :3], both[:, 3:]


class CNNBackend:
    """A FrameCNN per fold and seed; `encode` gives its penultimate layer (feature_dim numbers) or its class scores."""

    trained = True

    def __init__(
        self, inputs: Inputs, input_size: int, feature_dim: int, epochs: int, batch_size: int, lr: float, **_: object
    ) -> None:
        if inputs not in INPUTS:
            raise ValueError(f"CNN inputs {inputs!r}: expected one of {', '.join(INPUTS)}")
        self.inputs = inputs
        self.name, self.channels = INPUTS[inputs]
        self.feature_dim, self.epochs, self.batch_size, self.lr = feature_dim, epochs, batch_size, lr
        self.model: FrameCNN | None = None

    def _batch(
        self, frames: np.ndarray, refs: np.ndarray, dev: torch.device, gen: torch.Generator | None
    ) -> torch.Tensor:
        x = torch.as_tensor(frames, device=dev).float().div_(255.0)
        r = torch.as_tensor(refs, device=dev).float().div_(255.0)
        if gen is not None:
            x, r = augment_pair(x, r, gen)
        if self.inputs == "frame":
            out = x - 0.5
        elif self.inputs == "delta":
            out = x - r
        else:
            out = torch.cat([x - r, x - 0.5], dim=1)
        # channels-last: oneDNN's convolutions run about 25 % faster on it than on NCHW (1 thread, 56 px)
        return out.contiguous(memory_format=torch.channels_last)

    def fit(self, train: TrainingFrames, val: TrainingFrames, n_classes: int, seed: int) -> dict:
        """Train on `train`; `val` is scored once, after the last epoch (scoring it every epoch cost a fifth)."""
        dev = device()
        gen = seed_everything(seed)
        model = FrameCNN(n_classes, self.feature_dim, self.channels)
        model = model.to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]  # (stubs lack it)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs)
        history = []
        n = len(train.labels)
        for epoch in range(self.epochs):
            model.train()
            order = torch.randperm(n, generator=gen).numpy()
            total = 0.0
            for s in range(0, n, self.batch_size):
                b = np.sort(order[s : s + self.batch_size])
                xb = self._batch(train.frames[b], train.refs[b], dev, gen)
                loss = F.cross_entropy(model(xb), torch.as_tensor(train.labels[b], device=dev))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(b)
            sched.step()
            history.append({"epoch": epoch, "loss": round(total / max(n, 1), 5)})
        self.model = model.eval()
        return {"history": history, "val_frame_acc": round(self._accuracy(model, val), 4)}

    @torch.inference_mode()
    def _accuracy(self, model: FrameCNN, data: TrainingFrames) -> float:
        if not len(data.labels):
            return float("nan")
        model.eval()
        dev = next(model.parameters()).device
        pred = torch.cat(
            [
                model(self._batch(data.frames[s : s + 256], data.refs[s : s + 256], dev, None)).argmax(1).cpu()
                for s in range(0, len(data.labels), 256)
            ]
        )
        return float((pred.numpy() == data.labels).mean())

    @torch.inference_mode()
    def encode(self, frames: np.ndarray, ref: np.ndarray, logits: bool = False) -> np.ndarray:
        """Penultimate features (or class scores with `logits`) of frames (N, 3, S, S); `ref` is one reference
        frame (3, S, S) for all, or one per frame (N, 3, S, S). Batches of 512 frames."""
        if self.model is None:
            raise RuntimeError(f"{self.name}: encode() before fit()")
        model = self.model
        dev = next(model.parameters()).device
        refs = ref if ref.ndim == 4 else np.repeat(ref[None], len(frames), axis=0)
        out = []
        for s in range(0, len(frames), ENCODE_BATCH):
            f = model.features(self._batch(frames[s : s + ENCODE_BATCH], refs[s : s + ENCODE_BATCH], dev, None))
            out.append((model.head(f) if logits else f).cpu().numpy().astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.feature_dim), np.float32)


for _inputs, (_name, _) in INPUTS.items():  # cnn, cnn_delta, cnn_pair
    BACKENDS.add(_name, functools.partial(CNNBackend, _inputs))
