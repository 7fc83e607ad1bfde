"""Sequence classifiers by name (`train.variants`): `lstm` (torch.nn.LSTM), `mv_lstm`, `mv_lstm_sup`, `mv_lstm_att`,
`mv_lstm_slow` (a tied, slow mode cell), `lstm_wide` (an LSTM with the MV-LSTM's parameter count), and the
non-recurrent baselines `mean_pool` and `last_frame` (pipeline/models/readings.py).

`VARIANTS` is the one list of names: params validation and the stages ask it. A variant is a factory
of `SequenceClassifier` registered below with its recurrent layer.

`mv_lstm_att` is our reading of the follow-up paper's attentive MV-LSTM (pipeline/models/mv_lstm_att.py).

`mv_lstm_sup` adds our optional mode supervision (off in the paper): a head on the final mode cell
m_T learns to predict the (seen) mode of a take, and a gradient-reversal head on h_T pushes mode
information out of the task features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from pipeline.errors import PipelineError
from pipeline.models.mv_lstm import MVLSTM
from pipeline.models.mv_lstm_att import AttentiveMVLSTM
from pipeline.models.readings import CapacityLSTM, LastFrame, MeanPool, SlowModeLSTM
from pipeline.registry import Registry

PARAMS_KEY = "train.variants"
SUPERVISED = "mv_lstm_sup"  # the variant with mode heads (needs the training modes)

Layer = Callable[[int, int], nn.Module]  # (input size, hidden size) -> batch-first recurrent layer


class ModelConfigError(PipelineError, ValueError):
    """A variant that the data or parameters cannot support (one line, naming the parameter)."""


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:  # noqa: D102
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """Identity forward, negated (scaled) gradient backward."""
    return _GradReverse.apply(x, weight)


class SequenceClassifier(nn.Module):
    """Per-frame features (B, T, D) with lengths -> expression logits (and mode logits if supervised)."""

    def __init__(
        self,
        variant: str,
        layer: Layer,
        input_size: int,
        hidden: int,
        n_classes: int,
        n_modes: int = 0,
        dropout: float = 0.2,
        adversarial_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.drop = nn.Dropout(dropout)
        self.rnn: nn.Module = layer(input_size, hidden)
        hidden = int(getattr(self.rnn, "hidden_size", hidden))  # a capacity-matched layer has its own width
        self.head = nn.Linear(hidden, n_classes)
        self.supervised = variant == SUPERVISED
        self.adversarial_weight = adversarial_weight
        if self.supervised:
            if n_modes < 2:
                raise ModelConfigError(
                    f"{PARAMS_KEY}: {SUPERVISED} needs at least two training modes to supervise "
                    f"(this fold trains on {n_modes}; see split.seen_modes)"
                )
            self.mode_head = nn.Linear(hidden, n_modes)
            self.adv_head = nn.Linear(hidden, n_modes)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(h_T, m_T or None) at each sequence's last valid step."""
        x = self.drop(x)
        if isinstance(self.rnn, nn.LSTM):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.rnn(packed)
            return h[-1], None
        _, (h, _, m) = self.rnn(x, lengths)
        return h, m

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        h, m = self.encode(x, lengths)
        out = {"logits": self.head(self.drop(h))}
        if self.supervised and m is not None:
            out["mode_logits"] = self.mode_head(m)
            out["adv_logits"] = self.adv_head(grad_reverse(h, self.adversarial_weight))
        return out


VARIANTS: Registry[Callable[..., SequenceClassifier]] = Registry("model variant")


def _lstm(d: int, h: int) -> nn.Module:
    return nn.LSTM(d, h, batch_first=True)


def _variant(name: str, layer: Layer) -> None:
    def factory(**kwargs: Any) -> SequenceClassifier:
        return SequenceClassifier(name, layer, **kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"A `{name}` sequence classifier ({getattr(layer, '__name__', layer)} layer)."
    VARIANTS.add(name, factory)


_variant("lstm", _lstm)
_variant("mv_lstm", MVLSTM)
_variant(SUPERVISED, MVLSTM)
_variant("mv_lstm_att", AttentiveMVLSTM)
# our further readings and the non-recurrent baselines (pipeline/models/readings.py); Python path, no compiled scan
_variant("mv_lstm_slow", SlowModeLSTM)
_variant("lstm_wide", CapacityLSTM)
_variant("mean_pool", MeanPool)
_variant("last_frame", LastFrame)


def make_model(name: str, **kwargs: Any) -> SequenceClassifier:
    """A variant by its params name; an unknown name is a one-line error naming `train.variants` and the known ones."""
    model: SequenceClassifier = VARIANTS.create(name, key=PARAMS_KEY, **kwargs)
    return model


def modes_needed(variant: str, mode_names: list[str]) -> int:
    """How many mode classes the variant's heads predict (0: no mode heads)."""
    return len(mode_names) if variant == SUPERVISED else 0
