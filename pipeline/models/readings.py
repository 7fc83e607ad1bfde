"""Further readings of the mode cell, and the baselines that say what recurrence and gating add.

All are ours (the paper's equations are not available to us); each is registered as a variant in
pipeline/models/registry.py and told apart from the others by a unit test (tests/models/test_readings.py).

- `SlowModeLSTM` (`mv_lstm_slow`), a tied, slow mode cell. In the plain reading the two cells are
  interchangeable (swap their weight blocks and negate both candidates: h is unchanged), so nothing
  makes m hold the *mode*. Here the mode cell has no weights of its own: it integrates the same input
  the task cell reads (tied candidate), slowly, with a learnt per-feature rate,

      m_0 = x_1,   m_t = a * m_{t-1} + (1 - a) * x_t,   a = sigmoid(r) in (0, 1)

  and the task LSTM reads the temporal contrast x_t - m_{t-1}. Whatever is static over a take (pose,
  light, identity: a constant offset of the features) is in m and cancels by construction: h is
  *exactly* unchanged by any constant offset of the input, from the first step (m starts at the first
  frame). The price is that the absolute first frame is never read; only change is. m_T (the mode
  state at the last step) is returned as the mode cell for probes.
- `CapacityLSTM` (`lstm_wide`): `torch.nn.LSTM` with the hidden size at which its parameter count
  matches the MV-LSTM's (7H(D+H+1)); a gain of the MV-LSTM over it is not just more weights.
- `MeanPool` (`mean_pool`): the mean over the take's steps of a per-frame tanh projection; no order.
- `LastFrame` (`last_frame`): the same projection of the last step only; no history.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def _lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
    return lengths.to("cpu", torch.long)


def _at_last(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """seq (B, T, F) at each sequence's last valid step -> (B, F)."""
    idx = (lengths - 1).clamp(min=0).to(seq.device)
    return seq[torch.arange(seq.shape[0], device=seq.device), idx]


class SlowModeLSTM(nn.Module):
    """Batch-first LSTM over the contrast of the input with a slow, tied mode cell (see the module docstring)."""

    def __init__(self, input_size: int, hidden_size: int, slow_init: float = 2.0) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.rate = nn.Parameter(torch.full((input_size,), slow_init))  # a = sigmoid(2) = 0.88: slow at first

    def mode_cell(self, x: torch.Tensor) -> torch.Tensor:
        """m_t for every step (B, T, D): m_0 = x_1, then a slow running average of the input."""
        a = torch.sigmoid(self.rate)
        m = x[:, 0]
        out = []
        for t in range(x.shape[1]):
            m = a * m + (1 - a) * x[:, t]
            out.append(m)
        return torch.stack(out, 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """x: (B, T, D) -> outputs (B, T, H) and the final (h, c, m) at each sequence's last valid step."""
        n = _lengths(x, lengths)
        m = self.mode_cell(x)
        before = torch.cat([x[:, :1], m[:, :-1]], 1)  # m_{t-1}, with m before the first step = x_1
        packed = pack_padded_sequence(x - before, n, batch_first=True, enforce_sorted=False)
        _, (h, c) = self.lstm(packed)
        return m, (h[-1], c[-1], _at_last(m, n))


def matched_hidden(input_size: int, hidden: int, gates: int = 7) -> int:
    """The torch.nn.LSTM hidden size whose parameters 4H'(D+H'+2) come nearest an MV-LSTM's gates*H(D+H+1)."""
    target = gates * hidden * (input_size + hidden + 1)
    b = input_size + 2
    return max(1, round((-b + math.sqrt(b * b + target)) / 2))  # 4H'^2 + 4bH' = target


class CapacityLSTM(nn.LSTM):
    """torch.nn.LSTM with as many parameters as an MV-LSTM of `hidden_size` (its own hidden size is larger)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, matched_hidden(input_size, hidden_size), batch_first=True)


class MeanPool(nn.Module):
    """h = mean over the valid steps of tanh(W x_t + b): what the frames say, in no order."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.proj = nn.Linear(input_size, hidden_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        n = _lengths(x, lengths).to(x.device)
        z = torch.tanh(self.proj(x))
        mask = (torch.arange(x.shape[1], device=x.device)[None] < n[:, None]).to(z.dtype)
        h = (z * mask[..., None]).sum(1) / n.clamp(min=1)[:, None].to(z.dtype)
        return z, (h, h, None)


class LastFrame(nn.Module):
    """h = tanh(W x_T + b) at the last valid step: the apex frame alone, no history."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.proj = nn.Linear(input_size, hidden_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        h = torch.tanh(self.proj(_at_last(x, _lengths(x, lengths))))
        return h[:, None], (h, h, None)
