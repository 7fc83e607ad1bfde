"""Mode Variational LSTM (Baddar & Ro, AAAI 2019): an LSTM with a second, *mode* cell state.

The paper's full equations are not available to us; this is our reading (see README):

    z_t   = [x_t, h_{t-1}]
    i, f, o = sigma(W_{i,f,o} z_t + b)        g   = tanh(W_g z_t + b_g)        (standard LSTM)
    i^m, f^m = sigma(W_{im,fm} z_t + b)       g^m = tanh(W_gm z_t + b_gm)      (mode gates)
    c_t = f * c_{t-1} + i * g                                                   (task cell)
    m_t = f^m * m_{t-1} + i^m * g^m                                             (mode cell)
    h_t = o * tanh(c_t - m_t)                          (shared output gate, mode suppressed)

The seven gate blocks are one fused matrix (7H rows, ordered i, f, g, o, i^m, f^m, g^m so the first
4H match `torch.nn.LSTM`'s layout): one matmul per step. With the mode input gate forced to zero
and m_0 = 0 the cell is exactly a standard LSTM, which the tests check against `torch.nn.LSTM`.
The recurrence itself runs as one fused autograd function (pipeline/models/mv_scan.py), compiled
(pipeline/models/csrc/mv_scan.cpp) where a C++ compiler is available.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.mv_scan import mv_lstm_layer, read_padded


class MVLSTM(nn.Module):
    """Batch-first MV-LSTM layer over variable-length sequences (padding is masked out)."""

    def __init__(
        self, input_size: int, hidden_size: int, mode_forget_bias: float = 2.0, force_mode_gate_zero: bool = False
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.force_mode_gate_zero = force_mode_gate_zero
        self.weight_ih = nn.Parameter(torch.empty(7 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(7 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(7 * hidden_size))
        self.reset_parameters(mode_forget_bias)

    def reset_parameters(self, mode_forget_bias: float = 2.0) -> None:
        """Uniform(+-1/sqrt(H)) like torch.nn.LSTM; the mode forget gate starts open (bias +2)
        so m_t can hold what is static over the sequence."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for w in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(w, -bound, bound)
        H = self.hidden_size
        with torch.no_grad():
            self.bias[5 * H : 6 * H].fill_(mode_forget_bias)

    def forward(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """x: (B, T, D). Returns outputs (B, T, H), zero after each sequence's end, and the final
        (h, c, m) at each sequence's last valid step."""
        B = x.shape[0]
        H = self.hidden_size
        if state is None:
            zeros = x.new_zeros(B, H)
            state = (zeros, zeros, zeros)
        hs, cs, ms = mv_lstm_layer(x, self.weight_ih, self.bias, self.weight_hh, state, self.force_mode_gate_zero)
        return read_padded(hs, cs, ms, lengths)
