"""The attentive MV-LSTM (our reading of the 2020 follow-up): its LSTM special case and its split."""

from __future__ import annotations

import torch

from pipeline.models.mv_lstm_att import AttentiveMVLSTM

D, H = 5, 6


def _as_lstm(att: AttentiveMVLSTM) -> torch.nn.LSTM:
    """Attention fully open (a = 1), mode input gate shut: the special case that is a plain LSTM.
    Returns a torch.nn.LSTM holding the same task weights."""
    with torch.no_grad():
        att.weight_att.zero_()
        att.bias_att.fill_(40.0)  # sigmoid(40) == 1 in float64
        att.weight_ih[4 * H : 5 * H].zero_()
        att.weight_hh[4 * H : 5 * H].zero_()
        att.bias[4 * H : 5 * H].fill_(-40.0)  # i^m = sigmoid(-40) ~ 4e-18
    lstm = torch.nn.LSTM(D, H, batch_first=True).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(att.weight_ih[: 4 * H])
        lstm.weight_hh_l0.copy_(att.weight_hh[: 4 * H])
        lstm.bias_ih_l0.copy_(att.bias[: 4 * H])
        lstm.bias_hh_l0.zero_()
    return lstm


def test_with_the_attention_open_and_the_mode_gate_shut_it_is_exactly_an_lstm() -> None:
    torch.manual_seed(0)
    att = AttentiveMVLSTM(D, H).double()
    lstm = _as_lstm(att)
    x = torch.randn(3, 8, D, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_a, (h_a, c_a, m_a) = att(x)
    out_l, (h_l, c_l) = lstm(x2)
    torch.testing.assert_close(out_a, out_l, atol=1e-5, rtol=0)
    torch.testing.assert_close(h_a, h_l[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(c_a, c_l[0], atol=1e-5, rtol=0)
    assert m_a.abs().max() < 1e-12
    (out_a.sin().sum() + h_a.sum()).backward()
    (out_l.sin().sum() + h_l.sum()).backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(att.weight_ih.grad[: 4 * H], lstm.weight_ih_l0.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(att.weight_hh.grad[: 4 * H], lstm.weight_hh_l0.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(att.bias.grad[: 4 * H], lstm.bias_ih_l0.grad, atol=1e-5, rtol=0)


def test_the_static_part_reaches_only_the_mode_cell() -> None:
    """With the attention shut (a = 0) the task gates see no input: inputs can reach c only through
    h, so the first step's task cell is the same for every input, while the mode cell differs."""
    torch.manual_seed(1)
    att = AttentiveMVLSTM(D, H).double()
    with torch.no_grad():
        att.weight_att.zero_()
        att.bias_att.fill_(-40.0)
    x = torch.randn(4, 1, D, dtype=torch.float64)
    _, (_, c, m) = att(x)
    torch.testing.assert_close(c, c[:1].expand_as(c), atol=1e-12, rtol=0)
    assert (m - m[:1]).abs().max() > 1e-3


def test_attention_is_a_share_per_feature_and_learns() -> None:
    torch.manual_seed(2)
    att = AttentiveMVLSTM(D, H)
    x = torch.randn(2, 7, D)
    a = att.attention(x)
    assert a.shape == x.shape and torch.all((a > 0) & (a < 1))
    out, (h, _, m) = att(x, torch.tensor([7, 4]))
    (out.sum() + m.sum()).backward()
    assert att.weight_att.grad is not None and att.weight_att.grad.abs().sum() > 0
    assert torch.count_nonzero(out[1, 4:]) == 0
