"""The fused MV-LSTM scan (hand-written backward) against autograd and a step-by-step reference, in both
implementations: the compiled loop (csrc/mv_scan.cpp) and the Python one. The compiled one must build here
(`make install` builds it; a machine without a C++ compiler fails these tests, never skips them)."""

from __future__ import annotations

import logging

import pytest
import torch

from pipeline.models import mv_scan_native
from pipeline.models.mv_lstm import MVLSTM
from pipeline.models.mv_lstm_att import AttentiveMVLSTM
from pipeline.models.mv_scan import mv_lstm_scan, use_onednn

D, H = 4, 3


@pytest.fixture(autouse=True, params=["native", "python"])
def scan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Every test of this module runs once per implementation (MVFER_MV_SCAN)."""
    monkeypatch.setenv("MVFER_MV_SCAN", request.param)
    mv_scan_native.reset()
    if request.param == "native":
        assert mv_scan_native.native() is not None
    yield request.param
    mv_scan_native.reset()


def _reference(mv: MVLSTM, x: torch.Tensor, lengths: torch.Tensor, state: tuple[torch.Tensor, ...]):
    """The cell written as a plain autograd loop with masking (the implementation before the fused scan)."""
    h, c, m = state
    valid = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).to(x.dtype)
    x_proj = x @ mv.weight_ih.T + mv.bias
    outputs = []
    for t in range(x.shape[1]):
        i, f, g, o, im, fm, gm = (x_proj[:, t] + h @ mv.weight_hh.T).chunk(7, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        m_new = torch.sigmoid(fm) * m + torch.sigmoid(im) * torch.tanh(gm)
        h_new = torch.sigmoid(o) * torch.tanh(c_new - m_new)
        v = valid[:, t : t + 1]
        h, c, m = v * h_new + (1 - v) * h, v * c_new + (1 - v) * c, v * m_new + (1 - v) * m
        outputs.append(h_new * v)
    return torch.stack(outputs, dim=1), (h, c, m)


def test_the_hand_written_backward_passes_gradcheck() -> None:
    torch.manual_seed(0)
    T, B = 5, 2
    inputs = [
        torch.randn(B, T, 7 * H, dtype=torch.float64, requires_grad=True),
        torch.randn(7 * H, H, dtype=torch.float64, requires_grad=True),
    ]
    state = [torch.randn(B, H, dtype=torch.float64, requires_grad=True) for _ in range(3)]

    def f(xp, w, h0, c0, m0):
        hs, cs, ms = mv_lstm_scan(xp, w, (h0, c0, m0))
        return hs, cs, ms

    assert torch.autograd.gradcheck(f, (*inputs, *state))


def test_the_fused_layer_matches_the_step_by_step_reference_with_padding_and_a_state() -> None:
    torch.manual_seed(3)
    mv = MVLSTM(D, H).double()
    x = torch.randn(3, 6, D, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 4])
    state = tuple(torch.randn(3, H, dtype=torch.float64) for _ in range(3))
    out, final = mv(x, lengths, state)
    ref_out, ref_final = _reference(mv, x, lengths, state)
    torch.testing.assert_close(out, ref_out, atol=1e-10, rtol=0)
    for a, b in zip(final, ref_final):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    params = [x, *mv.parameters()]
    weights = [torch.randn_like(out), *(torch.randn_like(s) for s in final)]
    grads = torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, (out, *final))), params)
    ref_grads = torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, (ref_out, *ref_final))), params)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert torch.count_nonzero(grads[0][1, 2:]) == 0  # the padding of sequence 1 gets no gradient


def test_it_runs_under_inference_mode_without_keeping_a_graph() -> None:
    mv = MVLSTM(D, H)
    x = torch.randn(2, 5, D)
    with torch.inference_mode():
        out, _ = mv(x, torch.tensor([5, 3]))
    assert not out.requires_grad and out.shape == (2, 5, H)
    torch.testing.assert_close(out, mv(x, torch.tensor([5, 3]))[0].detach())


def test_float32_on_cpu_takes_the_onednn_path_and_agrees_with_float64() -> None:
    """float32 on CPU routes the matmuls through oneDNN (`use_onednn`); float64 through torch.mm."""
    torch.manual_seed(4)
    mv64 = MVLSTM(D, H).double()
    mv32 = MVLSTM(D, H)
    mv32.load_state_dict({k: v.float() for k, v in mv64.state_dict().items()})
    x64 = torch.randn(3, 7, D, dtype=torch.float64, requires_grad=True)
    x32 = x64.detach().float().requires_grad_(True)
    assert use_onednn(x32) == torch.backends.mkldnn.is_available() and not use_onednn(x64)
    lengths = torch.tensor([7, 3, 5])
    out64, (h64, _, m64) = mv64(x64, lengths)
    out32, (h32, _, m32) = mv32(x32, lengths)
    torch.testing.assert_close(out32, out64.float(), atol=1e-5, rtol=0)
    (out64.sum() + h64.sum() + m64.sum()).backward()
    (out32.sum() + h32.sum() + m32.sum()).backward()
    torch.testing.assert_close(x32.grad, x64.grad.float(), atol=1e-5, rtol=0)
    for p32, p64 in zip(mv32.parameters(), mv64.parameters()):
        torch.testing.assert_close(p32.grad, p64.grad.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("zero_mode_input", [False, True])
def test_the_compiled_and_the_python_scan_agree_in_float32(
    zero_mode_input: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same outputs and gradients (float32, padding, a state, the LSTM special case) from both implementations."""
    torch.manual_seed(5)
    B, T, D2, H2 = 5, 9, 6, 8
    mv = MVLSTM(D2, H2, force_mode_gate_zero=zero_mode_input)
    att = AttentiveMVLSTM(D2, H2)
    x = torch.randn(B, T, D2)
    lengths = torch.tensor([9, 1, 4, 9, 6])
    state = tuple(torch.randn(B, H2) for _ in range(3))
    results = {}
    for impl in ("native", "python"):
        monkeypatch.setenv("MVFER_MV_SCAN", impl)
        mv_scan_native.reset()
        got = []
        for layer in (mv, att):
            layer.zero_grad()
            xi = x.clone().requires_grad_(True)
            out, (h, c, m) = layer(xi, lengths, state)
            (out.square().sum() + h.sum() + 2 * c.sum() - m.sum()).backward()
            got += [out.detach(), h.detach(), m.detach(), xi.grad, *(p.grad.clone() for p in layer.parameters())]
        results[impl] = got
    for a, b in zip(results["native"], results["python"], strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_without_a_compiler_auto_falls_back_with_a_warning_and_native_refuses_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("MVFER_MV_SCAN", "auto")
    mv_scan_native.reset()
    with caplog.at_level(logging.WARNING):
        assert mv_scan_native.native() is None
    assert "no-such-compiler" in caplog.text and "Python scan" in caplog.text
    out, _ = MVLSTM(D, H)(torch.randn(2, 3, D))  # still runs, on the Python scan
    assert out.shape == (2, 3, H)
    monkeypatch.setenv("MVFER_MV_SCAN", "native")
    mv_scan_native.reset()
    with pytest.raises(mv_scan_native.NativeScanUnavailable, match="no-such-compiler") as err:
        mv_scan_native.native()
    assert "\n" not in str(err.value) and str(err.value).startswith("MVFER_MV_SCAN=native but")
    monkeypatch.setenv("MVFER_MV_SCAN", "auto")  # `mvfer build-ext` asks for the compiled scan without the variable
    mv_scan_native.reset()
    with pytest.raises(mv_scan_native.NativeScanUnavailable, match="no-such-compiler") as err:
        mv_scan_native.build()
    assert "MVFER_MV_SCAN" not in str(err.value)
    monkeypatch.setenv("MVFER_MV_SCAN", "fast")
    mv_scan_native.reset()
    with pytest.raises(mv_scan_native.NativeScanUnavailable, match="MVFER_MV_SCAN='fast'"):
        mv_scan_native.native()


def test_an_empty_sequence_passes_the_state_and_its_gradient_through_once() -> None:
    """T = 0: the outputs are the initial state, whose gradient is the incoming one (not twice it)."""
    B = 2
    xp = torch.zeros(B, 0, 7 * H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7 * H, H, dtype=torch.float64, requires_grad=True)
    state = [torch.randn(B, H, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    hs, cs, ms = mv_lstm_scan(xp, w, tuple(state))
    (hs.sum() + 2 * cs.sum() + 3 * ms.sum()).backward()
    for s, factor in zip(state, (1, 2, 3)):
        torch.testing.assert_close(s.grad, torch.full_like(s, factor))
    assert torch.count_nonzero(w.grad) == 0


def test_double_backward_is_refused_not_silently_wrong(scan: str) -> None:
    mv = MVLSTM(D, H).double()
    x = torch.randn(2, 4, D, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError):  # the Python scan refuses at create_graph, the compiled one at the second pass
        (g,) = torch.autograd.grad(mv(x)[0].sum(), x, create_graph=True)
        g.sum().backward()


def test_the_scan_that_ran_is_recorded_for_the_reports(scan: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`implementation()` says what the dispatch ran in this process (the stages put it in their provenance)."""
    assert mv_scan_native.implementation().startswith("none ran (MVFER_MV_SCAN=")
    MVLSTM(D, H)(torch.randn(2, 3, D))
    expected = "native" if scan == "native" else "python (MVFER_MV_SCAN=python)"
    assert mv_scan_native.implementation() == expected
    MVLSTM(D, H).to(torch.bfloat16)(
        torch.randn(2, 3, D, dtype=torch.bfloat16)
    )  # a dtype the compiled scan does not serve
    assert mv_scan_native.implementation() == "; ".join(sorted({expected, "python (torch.bfloat16 tensors)"}))
    if scan == "native":
        monkeypatch.setenv("CXX", "no-such-compiler")
        monkeypatch.setenv("MVFER_MV_SCAN", "auto")
        mv_scan_native.reset()
        MVLSTM(D, H)(torch.randn(2, 3, D))
        assert mv_scan_native.implementation().startswith(
            "python (compiled scan unavailable: no C++ compiler ('no-such-compiler'"
        )


def test_every_checkout_builds_from_one_copy_of_the_source(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ninja rebuilds when a source's path changes: two checkouts (a DVC experiment's temporary copy and the
    workspace) must hand the compiler the same path, or each rebuilds the shared module under the other."""
    import torch.utils.cpp_extension as cpp

    seen: list[str] = []
    monkeypatch.setattr(cpp, "load", lambda **kw: seen.append(kw["sources"][0]))
    text = mv_scan_native.SOURCE.read_bytes()
    for checkout in ("workspace", "exp-copy"):
        src = tmp_path / checkout / "mv_scan.cpp"
        src.parent.mkdir()
        src.write_bytes(text)
        monkeypatch.setattr(mv_scan_native, "SOURCE", src)
        mv_scan_native._build(tmp_path / "ext")
    assert seen[0] == seen[1] and str(tmp_path / "ext") in seen[0]
    copy = tmp_path / "ext" / mv_scan_native.module_name(text) / "mv_scan.cpp"
    assert copy.read_bytes() == text
