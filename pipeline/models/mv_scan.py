"""The MV-LSTM recurrence over a whole sequence as one autograd function with a hand-written backward.

Why: a Python loop of autograd ops per time step made the MV-LSTM 4-14x slower than
`torch.nn.LSTM` (whose CPU kernel is fused). Here autograd sees one node for the whole sequence:

- the caller computes the input projections of every step at once (one matmul);
- the forward loop does only `h @ W_hh^T` plus in-place elementwise updates into preallocated
  buffers, without recording a graph;
- the backward loop does only `dgates @ W_hh` plus elementwise products whose factors (gate
  derivatives) are computed for all steps at once; the weight gradient is one matmul over all steps.

Gate blocks here are in the *scan order* (i, f, g, g^m, i^m, f^m, o): the task-cell gates, the two
tanh blocks and the mode-cell gates are then each one contiguous slice. `to_scan_order` reorders a
(7H, ...) matrix from the parameter order (i, f, g, o, i^m, f^m, g^m) of `MVLSTM`.

No masking happens here: a step depends only on earlier steps, so the caller runs every sequence
over the padded length and reads each one's outputs and final state up to its own length.
The code is device-agnostic (CPU or CUDA).
"""

from __future__ import annotations

import torch

# parameter block order (i, f, g, o, i^m, f^m, g^m) -> scan order (i, f, g, g^m, i^m, f^m, o)
_SCAN_ORDER = (0, 1, 2, 6, 4, 5, 3)


def to_scan_order(weight: torch.Tensor, hidden: int) -> torch.Tensor:
    """Reorder the 7 gate blocks (rows) of a weight or bias from parameter order to scan order."""
    base = torch.arange(hidden, device=weight.device)
    return weight.index_select(0, torch.cat([base + k * hidden for k in _SCAN_ORDER]))


class _MVScan(torch.autograd.Function):
    """xp: (T, B, 7H) input projections plus bias; w: (7H, H); h0, c0, m0: (B, H); scan order.
    Returns hs, cs, ms, each (T + 1, B, H), index 0 the initial state."""

    @staticmethod
    def forward(ctx, xp: torch.Tensor, w: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, m0: torch.Tensor,
                zero_mode_input: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: D102
        T, B, G = xp.shape
        H = G // 7
        act = torch.empty_like(xp)
        hs, cs, ms = (xp.new_empty(T + 1, B, H) for _ in range(3))
        td = xp.new_empty(T, B, H)  # tanh(c_t - m_t)
        hs[0], cs[0], ms[0] = h0, c0, m0
        wt = w.T
        for t in range(T):
            a = torch.addmm(xp[t], hs[t], wt, out=act[t])
            a[:, : 2 * H].sigmoid_()
            a[:, 2 * H : 4 * H].tanh_()
            a[:, 4 * H :].sigmoid_()
            if zero_mode_input:
                a[:, 4 * H : 5 * H].zero_()
            torch.mul(a[:, H : 2 * H], cs[t], out=cs[t + 1]).addcmul_(a[:, :H], a[:, 2 * H : 3 * H])
            torch.mul(a[:, 5 * H : 6 * H], ms[t], out=ms[t + 1]).addcmul_(a[:, 4 * H : 5 * H], a[:, 3 * H : 4 * H])
            torch.sub(cs[t + 1], ms[t + 1], out=td[t]).tanh_()
            torch.mul(a[:, 6 * H :], td[t], out=hs[t + 1])
        ctx.save_for_backward(w, act, hs, cs, ms, td)
        ctx.zero_mode_input = zero_mode_input
        ctx.set_materialize_grads(False)
        return hs, cs, ms

    @staticmethod
    def backward(ctx, dhs: torch.Tensor | None, dcs: torch.Tensor | None, dms: torch.Tensor | None):  # noqa: D102
        w, act, hs, cs, ms, td = ctx.saved_tensors
        T, B, G = act.shape
        H = G // 7
        a = act.view(T, B, 7, H)
        i, f, g, gm, im, fm, o = a.unbind(2)
        dsig = (act * (1 - act)).view(T, B, 7, H)
        dtanh = 1 - a[:, :, 2:4] ** 2
        # dL/d(pre-activation) = dL/dc_t * task, dL/dm_t * mode, dL/dh_t * out_gate (per gate block)
        task = torch.stack((g * dsig[:, :, 0], cs[:-1] * dsig[:, :, 1], i * dtanh[:, :, 0]), 2)
        mode = torch.stack((im * dtanh[:, :, 1], gm * dsig[:, :, 4], ms[:-1] * dsig[:, :, 5]), 2)
        if ctx.zero_mode_input:
            mode[:, :, 1].zero_()
        out_gate = td * dsig[:, :, 6]
        through = o * (1 - td * td)  # dh_t -> d(c_t - m_t)
        if dhs is None:
            dhs = torch.zeros_like(hs)
        da = torch.empty_like(act)
        da4 = da.view(T, B, 7, H)
        dc = dcs[T] if dcs is not None else torch.zeros_like(hs[0])
        dm = dms[T] if dms is not None else torch.zeros_like(hs[0])
        dh = dhs[T]
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                dh = torch.addmm(dhs[t + 1], da[t + 1], w)
                if dcs is not None:
                    dc = dc + dcs[t + 1]
                if dms is not None:
                    dm = dm + dms[t + 1]
            s = dh * through[t]
            dc_t, dm_t = dc + s, dm - s
            torch.mul(dc_t.unsqueeze(1), task[t], out=da4[t, :, 0:3])
            torch.mul(dm_t.unsqueeze(1), mode[t], out=da4[t, :, 3:6])
            torch.mul(dh, out_gate[t], out=da4[t, :, 6])
            dc, dm = dc_t * f[t], dm_t * fm[t]
        dh0 = torch.addmm(dhs[0], da[0], w)
        if dcs is not None:
            dc = dc + dcs[0]
        if dms is not None:
            dm = dm + dms[0]
        dw = da.view(T * B, G).T @ hs[:-1].reshape(T * B, H)
        return da, dw, dh0, dc, dm, None


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) inputs -> (T, B, rows) projections of every step in one matmul, time-major for the scan."""
    B, T, D = x.shape
    flat = x.transpose(0, 1).reshape(T * B, D)
    out = flat @ weight.T if bias is None else torch.addmm(bias, flat, weight.T)
    return out.view(T, B, -1)


def mv_lstm_scan(
    xp: torch.Tensor, weight_hh: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    zero_mode_input: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the MV-LSTM cell over every step of a padded, time-major batch (all in scan order).

    xp: (T, B, 7H) input projections plus bias; weight_hh: (7H, H); state: (h0, c0, m0), each (B, H).
    Returns h, c, m of every step, each (T + 1, B, H), index 0 = the initial state.
    `zero_mode_input` forces the mode input gate to 0 (with m0 = 0 the cell is then exactly an LSTM).
    """
    return _MVScan.apply(xp, weight_hh, *state, zero_mode_input)


def read_padded(
    hs: torch.Tensor, cs: torch.Tensor, ms: torch.Tensor, lengths: torch.Tensor | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batch-first outputs (B, T, H), zero after each sequence's end, and (h, c, m) at each one's length."""
    T = hs.shape[0] - 1
    if lengths is None:  # no padding: nothing to mask
        return hs[1:].transpose(0, 1), (hs[T], cs[T], ms[T])
    lengths = lengths.to(hs.device)
    batch = torch.arange(hs.shape[1], device=hs.device)
    valid = (torch.arange(T, device=hs.device)[None, :] < lengths[:, None]).to(hs.dtype)
    return hs[1:].transpose(0, 1) * valid[:, :, None], (hs[lengths, batch], cs[lengths, batch], ms[lengths, batch])
