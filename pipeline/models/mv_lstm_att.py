"""Attentive MV-LSTM, our reading of the follow-up paper (Baddar & Ro, Pattern Recognition 2020).

The paper's equations are not available to us. What it states: an attention splits each input into
a dynamic (task) part and a static (mode) part, the static part feeds the mode cell, and one
output gate is shared by both cells. Our reading, with x_t the frame features (dimension D):

    a_t   = sigma(W_a x_t + b_a)                      (attention, one weight per input feature)
    d_t   = a_t * x_t        s_t = (1 - a_t) * x_t    (dynamic part, static part)
    i, f, g        from [d_t, h_{t-1}]                (task cell gates see the dynamic part)
    i^m, f^m, g^m  from [s_t, h_{t-1}]                (mode cell gates see the static part)
    o              from [x_t, h_{t-1}]                (the one output gate, shared)
    c_t = f * c_{t-1} + i * g       m_t = f^m * m_{t-1} + i^m * g^m       h_t = o * tanh(c_t - m_t)

Choices that are ours: the attention looks at the current frame only (not h_{t-1}), so every
step's projections are computed in one matmul and the recurrence is the same fused scan as
`MVLSTM` (pipeline/models/mv_scan.py); it is element-wise over features (a gate, not a softmax).
Special case: with a_t = 1 and the mode input gate closed, the static part is zero, m stays 0 and
the cell is exactly a standard LSTM (tests check this against `torch.nn.LSTM`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.mv_scan import dense, mv_lstm_scan, read_padded


class AttentiveMVLSTM(nn.Module):
    """Batch-first attentive MV-LSTM layer; same interface and gate layout as `MVLSTM`."""

    def __init__(self, input_size: int, hidden_size: int, mode_forget_bias: float = 2.0) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_att = nn.Parameter(torch.empty(input_size, input_size))
        self.bias_att = nn.Parameter(torch.empty(input_size))
        # gate rows in parameter order (i, f, g, o, i^m, f^m, g^m), as in MVLSTM
        self.weight_ih = nn.Parameter(torch.empty(7 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(7 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(7 * hidden_size))
        self.reset_parameters(mode_forget_bias)

    def reset_parameters(self, mode_forget_bias: float = 2.0) -> None:
        """Like MVLSTM; the attention starts at 0.5 on average (zero bias): no split is preferred."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for w in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(w, -bound, bound)
        nn.init.uniform_(self.weight_att, -1.0 / math.sqrt(self.input_size), 1.0 / math.sqrt(self.input_size))
        nn.init.zeros_(self.bias_att)
        H = self.hidden_size
        with torch.no_grad():
            self.bias[5 * H : 6 * H].fill_(mode_forget_bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """a_t in (0, 1) per input feature: the share of x_t that is dynamic (task)."""
        return torch.sigmoid(dense(x.reshape(-1, self.input_size), self.weight_att, self.bias_att)).view(x.shape)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """x: (B, T, D). Returns outputs (B, T, H), zero after each sequence's end, and the final
        (h, c, m) at each sequence's last valid step."""
        B, T, D = x.shape
        H = self.hidden_size
        if state is None:
            zeros = x.new_zeros(B, H)
            state = (zeros, zeros, zeros)
        flat = x.reshape(B * T, D)  # batch-major, as the scan wants
        dynamic = self.attention(flat) * flat
        static = flat - dynamic
        w, b = self.weight_ih, self.bias  # parameter order: task (i, f, g) | output o | mode (i^m, f^m, g^m)
        xp = torch.cat(
            (
                dense(dynamic, w[: 3 * H], b[: 3 * H]),
                dense(flat, w[3 * H : 4 * H], b[3 * H : 4 * H]),
                dense(static, w[4 * H :], b[4 * H :]),
            ),
            1,
        ).view(B, T, 7 * H)  # the output gate sees the whole input
        hs, cs, ms = mv_lstm_scan(xp, self.weight_hh, state, consume_xp=True)  # xp is ours: the scan may reuse it
        return read_padded(hs, cs, ms, lengths)
