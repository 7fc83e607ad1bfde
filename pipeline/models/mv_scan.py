"""The MV-LSTM recurrence over a whole sequence as one autograd function with a hand-written backward.

Why: a Python loop of autograd ops per time step made the MV-LSTM 4-14x slower than
`torch.nn.LSTM` (whose CPU kernel is fused). Here autograd sees one node for the whole sequence:

- the caller computes the input projections of every step at once (one matmul);
- on CPU in float32 the matmuls go through oneDNN, as torch.nn.LSTM's do (`linear`);
- the forward loop does only `h @ W_hh^T` plus in-place elementwise updates into preallocated
  buffers, without recording a graph;
- the backward loop does only `dgates @ W_hh` plus elementwise products whose factors (gate
  derivatives) are computed for all steps at once; the weight gradient is one matmul over all steps.

Gate blocks here are in the *scan order* (o, i, i^m, f, f^m, g, g^m): the sigmoid gates and the
tanh blocks are each one contiguous slice, and task/mode gates sit in pairs so both cells update
in one operation. `to_scan_order` reorders a (7H, ...) matrix from the parameter order
(i, f, g, o, i^m, f^m, g^m) of `MVLSTM`.

No masking happens here: a step depends only on earlier steps, so the caller runs every sequence
over the padded length and reads each one's outputs and final state up to its own length.
The public functions are batch-major (B, T, .), like the layers' inputs; `_MVScan` is time-major inside.
The code is device-agnostic (CPU or CUDA). On CPU in float32/float64 the same recurrence runs compiled
(csrc/mv_scan.cpp via pipeline/models/mv_scan_native.py: one GEMM and fused loops per step, no Python
per step) when it builds; this module's `_MVScan` is then the reference the tests compare it with.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from pipeline.models import mv_scan_native

_ONEDNN_LINEAR: Any  # an op, or None where torch was built without oneDNN
try:  # oneDNN's GEMM, the library behind torch.nn.LSTM on CPU (and inductor's CPU linear)
    _ONEDNN_LINEAR = torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
except (AttributeError, RuntimeError):  # a build without oneDNN
    _ONEDNN_LINEAR = None


def use_onednn(*tensors: torch.Tensor) -> bool:
    """oneDNN for float32 on CPU: there MKL's sgemm ran at half its speed on an AMD EPYC host (see README)."""
    return _ONEDNN_LINEAR is not None and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias); no autograd of its own (used inside autograd functions)."""
    if use_onednn(x, weight):
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)


def linear_add(other: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """other + x @ weight.T, with `other` a full matrix."""
    if use_onednn(other, x, weight):
        return _ONEDNN_LINEAR.binary(x, other, weight, None, "add")
    return torch.addmm(other, x, weight.T)


class _Linear(torch.autograd.Function):
    """x @ weight.T + bias with the same GEMM choice in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # noqa: D102
        x, weight = ctx.saved_tensors
        return linear_grads(dy, x, weight, ctx.needs_input_grad[:2] + (ctx.has_bias and ctx.needs_input_grad[2],))


def linear_grads(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    needed: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of y = x @ weight.T + bias for x, weight, bias (2-D), those `needed` only."""
    dx = linear(dy, weight.T) if needed[0] else None
    dw = torch.mm(dy.T, x) if needed[1] else None  # BLAS takes dy.T as it is (oneDNN copied it)
    db = dy.sum(0) if needed[2] else None
    return dx, dw, db


# parameter block order (i, f, g, o, i^m, f^m, g^m) -> scan order (o, i, i^m, f, f^m, g, g^m)
_SCAN_ORDER = (3, 0, 4, 1, 5, 2, 6)


def to_scan_order(weight: torch.Tensor, hidden: int, dim: int = 0) -> torch.Tensor:
    """Reorder the 7 gate blocks (rows, or along `dim`) of a weight, bias or projection from parameter
    order to scan order."""
    base = torch.arange(hidden, device=weight.device)
    return weight.index_select(dim, torch.cat([base + k * hidden for k in _SCAN_ORDER]))


class _MVScan(torch.autograd.Function):
    """xp: (T, B, 7H) input projections plus bias; w: (7H, H), scan order; h0: (B, H); cm0: (B, 2H) = [c0 | m0].
    Returns hs (T + 1, B, H) and cms (T + 1, B, 2H) = [c | m], index 0 the initial state.

    The task and mode cells are updated together: with gates paired as (i, i^m), (f, f^m), (g, g^m),
    [c | m] <- [f | f^m] * [c | m] + [i | i^m] * [g | g^m] is one multiply and one fused multiply-add."""

    @staticmethod
    def forward(
        ctx, xp: torch.Tensor, w: torch.Tensor, h0: torch.Tensor, cm0: torch.Tensor, zero_mode_input: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        T, B, G = xp.shape
        H = G // 7
        gates = []
        hs, cms = xp.new_empty(T + 1, B, H), xp.new_empty(T + 1, B, 2 * H)
        td = xp.new_empty(T, B, H)  # tanh(c_t - m_t)
        hs[0], cms[0] = h0, cm0
        # per-step views made once (indexing in the loop costs more than the small ops themselves)
        xs, h_, cm_, td_ = xp.unbind(0), hs.unbind(0), cms.unbind(0), td.unbind(0)
        c_, m_ = cms[:, :, :H].unbind(0), cms[:, :, H:].unbind(0)
        for t in range(T):
            a = linear_add(xs[t], h_[t], w)
            gates.append(a)
            o, ii, ff, gg = a.split((H, 2 * H, 2 * H, 2 * H), 1)
            a.narrow(1, 0, 5 * H).sigmoid_()
            gg.tanh_()
            if zero_mode_input:
                ii.narrow(1, H, H).zero_()
            torch.mul(ff, cm_[t], out=cm_[t + 1]).addcmul_(ii, gg)
            torch.sub(c_[t + 1], m_[t + 1], out=td_[t]).tanh_()
            torch.mul(o, td_[t], out=h_[t + 1])
        act = torch.stack(gates) if T else xp.new_empty(0, B, G)
        ctx.save_for_backward(w, act, hs, cms, td)
        ctx.zero_mode_input = zero_mode_input
        ctx.set_materialize_grads(False)
        return hs, cms

    @staticmethod
    def backward(ctx, dhs: torch.Tensor | None, dcms: torch.Tensor | None):  # noqa: D102
        w, act, hs, cms, td = ctx.saved_tensors
        T, B, G = act.shape
        H = G // 7
        o, ii, ff, gg = act[:, :, :H], act[:, :, H : 3 * H], act[:, :, 3 * H : 5 * H], act[:, :, 5 * H :]
        # dL/d(pre-activations) of the paired gates = dL/d[c | m] * factor, for all steps at once
        factor = act.new_empty(T, B, 3, 2 * H)
        torch.mul(gg, ii * (1 - ii), out=factor[:, :, 0])  # (i, i^m)
        torch.mul(cms[:-1], ff * (1 - ff), out=factor[:, :, 1])  # (f, f^m)
        torch.mul(ii, 1 - gg * gg, out=factor[:, :, 2])  # (g, g^m)
        if ctx.zero_mode_input:
            factor[:, :, 0, H:].zero_()
        out_gate = td * o * (1 - o)  # dL/d(pre-o) = dL/dh * out_gate
        k = o * (1 - td * td)  # dh -> d(c - m)
        through = torch.stack((k, -k), 2)  # dh -> d[c | m]
        if dhs is None:
            dhs = torch.zeros_like(hs)
        da = torch.empty_like(act)
        dcm = (dcms[T] if dcms is not None else torch.zeros_like(cms[0])).view(B, 2, H)
        dh = dhs[T]
        dhs_, da_, og_, th_ = dhs.unbind(0), da.unbind(0), out_gate.unbind(0), through.unbind(0)
        da_o, da_pairs = da[:, :, :H].unbind(0), da[:, :, H:].view(T, B, 3, 2 * H).unbind(0)
        fac_, ff_ = factor.unbind(0), ff.reshape(T, B, 2, H).unbind(0)
        dcms_ = dcms.view(T + 1, B, 2, H).unbind(0) if dcms is not None else None
        wt = w.T
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                dh = linear_add(dhs_[t + 1], da_[t + 1], wt)
                if dcms_ is not None:
                    dcm = dcm + dcms_[t + 1]
            dcm_t = torch.addcmul(dcm, dh.unsqueeze(1), th_[t])  # (B, 2, H): d[c | m] at step t
            torch.mul(dh, og_[t], out=da_o[t])
            torch.mul(dcm_t.view(B, 1, 2 * H), fac_[t], out=da_pairs[t])
            dcm = dcm_t * ff_[t]
        dh0 = linear_add(dhs[0], da[0], wt) if T else dhs[0]
        dcm = dcm.reshape(B, 2 * H)
        if dcms is not None and T:  # with T = 0, dcms[T] = dcms[0] already started the carry
            dcm = dcm + dcms[0]
        dw = linear(da.view(T * B, G).T, hs[:-1].reshape(T * B, H).T)
        return da, dw, dh0, dcm, None


def _compiled() -> ModuleType:
    """The compiled module (the dispatch chose it, so it is loaded)."""
    module = mv_scan_native.native()
    if module is None:  # only if MVFER_MV_SCAN changed between the forward and the backward pass
        raise mv_scan_native.NativeScanUnavailable("the compiled MV-LSTM scan went away during a pass")
    return module


class _MVScanNative(torch.autograd.Function):
    """The recurrence by the compiled loop, batch-major and in parameter order: xp (B, T, 7H) or, with `w_ih`
    given, the inputs x (B, T, D) whose projection x W_ih^T + b is computed here straight into the gate buffer
    (no copy).
    Returns hs (B, T + 1, H) and cms (B, T + 1, 2H), index 0 the initial state."""

    @staticmethod
    def forward(
        ctx,
        x: torch.Tensor,
        w_ih: torch.Tensor | None,
        bias: torch.Tensor | None,
        w: torch.Tensor,
        h0: torch.Tensor,
        cm0: torch.Tensor,
        zero_mode_input: bool,
        consume_xp: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        B, T = x.shape[:2]
        if w_ih is None:
            xp, in_place, x2d = x, consume_xp, None
        else:
            x2d = x.reshape(B * T, x.shape[2])
            xp, in_place = linear(x2d, w_ih, bias).view(B, T, -1), True
        hs, cms, act, td = _compiled().forward(xp, w, h0, cm0, zero_mode_input, in_place)
        ctx.save_for_backward(w, act, hs, cms, td, x2d, w_ih)
        ctx.zero_mode_input = zero_mode_input
        ctx.set_materialize_grads(False)
        return hs, cms

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable: refuse double backward
    def backward(ctx, dhs: torch.Tensor | None, dcms: torch.Tensor | None):  # noqa: D102
        w, act, hs, cms, td, x2d, w_ih = ctx.saved_tensors
        da, dw, dh0, dcm0 = _compiled().backward(w, act, hs, cms, td, dhs, dcms, ctx.zero_mode_input)
        if w_ih is None:
            return da, None, None, dw, dh0, dcm0, None, None
        B, T, G = da.shape
        dx, dw_ih, db = linear_grads(da.view(B * T, G), x2d, w_ih, ctx.needs_input_grad[:3])
        return dx.view(B, T, -1) if dx is not None else None, dw_ih, db, dw, dh0, dcm0, None, None


def _why_not_native(*tensors: torch.Tensor) -> str | None:
    """None when the compiled scan serves these tensors (CPU float32/float64, and it is available); else why not."""
    for t in tensors:
        if t.device.type != "cpu":
            return f"{t.device.type} tensors"
        if t.dtype not in (torch.float32, torch.float64):
            return f"{t.dtype} tensors"
    if mv_scan_native.native() is None:
        return mv_scan_native.fallback_reason()
    return None


def dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias) for 2-D x, with autograd, through the same GEMM choice as the scan."""
    return _Linear.apply(x, weight, bias)


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) inputs -> (B, T, rows) projections of every step in one matmul."""
    B, T, D = x.shape
    return _Linear.apply(x.reshape(B * T, D), weight, bias).view(B, T, -1)


def _python_scan(
    xp: torch.Tensor, weight_hh: torch.Tensor, h0: torch.Tensor, cm0: torch.Tensor, zero_mode_input: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference `_MVScan` (time-major, scan order inside) behind the batch-major, parameter-order interface."""
    H = h0.shape[1]
    xp = to_scan_order(xp.transpose(0, 1), H, dim=2)  # (T, B, 7H), scan order
    hs, cms = _MVScan.apply(xp, to_scan_order(weight_hh, H), h0, cm0, zero_mode_input)
    return hs.transpose(0, 1), cms.transpose(0, 1)


def mv_lstm_scan(
    xp: torch.Tensor,
    weight_hh: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    zero_mode_input: bool = False,
    consume_xp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the MV-LSTM cell over every step of a padded, batch-major batch.

    xp: (B, T, 7H) input projections plus bias and weight_hh: (7H, H), gate blocks in MVLSTM's parameter
    order (i, f, g, o, i^m, f^m, g^m); state: (h0, c0, m0), each (B, H).
    Returns h, c, m of every step, each (B, T + 1, H), index 0 = the initial state.
    `zero_mode_input` forces the mode input gate to 0 (with m0 = 0 the cell is then exactly an LSTM).
    `consume_xp`: the caller made xp for this call and keeps no use of it (no autograd node saved it
    either), so the compiled scan may overwrite it with the gates instead of copying it.
    """
    return _scan(xp, None, None, weight_hh, state, zero_mode_input, consume_xp)


def mv_lstm_layer(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    bias: torch.Tensor,
    weight_hh: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    zero_mode_input: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`mv_lstm_scan` of x (B, T, D) projected by weight_ih (7H, D) and bias (7H), parameter order; the
    compiled path writes the projection straight into its gate buffer."""
    return _scan(x, weight_ih, bias, weight_hh, state, zero_mode_input, False)


def _scan(
    x: torch.Tensor,
    weight_ih: torch.Tensor | None,
    bias: torch.Tensor | None,
    weight_hh: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    zero_mode_input: bool,
    consume_xp: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The one dispatch of both entry points: compiled scan where it serves, else the Python one."""
    h0, c0, m0 = state
    cm0 = torch.cat((c0, m0), 1)
    why_not = _why_not_native(x, weight_hh, h0, cm0, *(t for t in (weight_ih, bias) if t is not None))
    mv_scan_native.record("native" if why_not is None else f"python ({why_not})")
    if why_not is None:
        hs, cms = _MVScanNative.apply(x, weight_ih, bias, weight_hh, h0, cm0, zero_mode_input, consume_xp)
    else:
        xp = x if weight_ih is None else project(x, weight_ih, bias)
        hs, cms = _python_scan(xp, weight_hh, h0, cm0, zero_mode_input)
    H = hs.shape[2]
    return hs, cms[..., :H], cms[..., H:]


def read_padded(
    hs: torch.Tensor,
    cs: torch.Tensor,
    ms: torch.Tensor,
    lengths: torch.Tensor | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batch-first outputs (B, T, H), zero after each sequence's end, and (h, c, m) at each one's length."""
    T = hs.shape[1] - 1
    if lengths is None:  # no padding: nothing to mask
        return hs[:, 1:], (hs[:, T], cs[:, T], ms[:, T])
    lengths = lengths.to(hs.device)
    batch = torch.arange(hs.shape[0], device=hs.device)
    valid = (torch.arange(T, device=hs.device)[None, :] < lengths[:, None]).to(hs.dtype)
    return hs[:, 1:] * valid[:, :, None], (hs[batch, lengths], cs[batch, lengths], ms[batch, lengths])
