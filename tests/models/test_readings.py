"""The further readings of the mode cell and the non-recurrent baselines: the properties that tell them apart."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.mv_lstm import MVLSTM
from pipeline.models.readings import CapacityLSTM, LastFrame, MeanPool, SlowModeLSTM, matched_hidden
from pipeline.models.registry import VARIANTS, make_model


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _final_h(layer: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, torch.nn.LSTM):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return layer(packed)[1][0][-1]
    return layer(x, lengths)[1][0]


def test_a_static_offset_leaves_the_slow_mode_cell_output_unchanged_unlike_the_lstm_and_mv_lstm() -> None:
    """What is constant over a take (pose, light: an offset of every frame's features) cancels in c - m by
    construction in `mv_lstm_slow`; the LSTM and our plain MV-LSTM reading carry it into h."""
    torch.manual_seed(0)
    x = torch.randn(4, 12, 6)
    lengths = torch.tensor([12, 9, 12, 5])
    offset = 1.5 * torch.randn(4, 1, 6)  # one offset per take, the same at every step
    layers = {
        "mv_lstm_slow": SlowModeLSTM(6, 8),
        "lstm": torch.nn.LSTM(6, 8, batch_first=True),
        "mv_lstm": MVLSTM(6, 8),
    }
    with torch.no_grad():
        moved = {
            name: (_final_h(m, x + offset, lengths) - _final_h(m, x, lengths)).abs().max() for name, m in layers.items()
        }
    assert moved["mv_lstm_slow"] < 1e-5
    assert moved["lstm"] > 1e-2 and moved["mv_lstm"] > 1e-2


def test_the_slow_mode_cell_holds_the_static_part_of_the_input() -> None:
    """On a take that is an offset plus a short change, m_T sits near the offset: the mode, not the expression."""
    layer = SlowModeLSTM(3, 4)
    offset = torch.tensor([[2.0, -1.0, 0.5]])
    x = offset[:, None].repeat(1, 16, 1)
    x[:, 6:8] += 1.0  # a brief change
    with torch.no_grad():
        _, (_, _, m) = layer(x, torch.tensor([16]))
    assert m is not None
    torch.testing.assert_close(m, offset, atol=0.15, rtol=0.0)


def test_the_capacity_matched_lstm_has_the_mv_lstm_parameter_count() -> None:
    for d, h in ((6, 64), (64, 64), (16, 32)):
        mv, wide, plain = MVLSTM(d, h), CapacityLSTM(d, h), torch.nn.LSTM(d, h)
        assert abs(_params(wide) - _params(mv)) / _params(mv) < 0.03
        assert _params(plain) < 0.7 * _params(mv)
        assert wide.hidden_size == matched_hidden(d, h) > h


def test_mean_pool_ignores_frame_order_and_last_frame_reads_only_the_last_step() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 7, 5)
    lengths = torch.tensor([7, 4])
    perm = torch.tensor([3, 1, 0, 2, 4, 5, 6])  # shuffles the first 4 steps (both takes' valid part)
    pool, last, lstm = MeanPool(5, 8), LastFrame(5, 8), torch.nn.LSTM(5, 8, batch_first=True)
    with torch.no_grad():
        torch.testing.assert_close(pool(x[:, perm], lengths)[1][0], pool(x, lengths)[1][0])
        assert (_final_h(lstm, x[:, perm], lengths) - _final_h(lstm, x, lengths)).abs().max() > 1e-3
        earlier = x.clone()
        earlier[0, :6] = 0.0
        earlier[1, :3] = 0.0
        earlier[1, 4:] = 9.0  # padding after the end is never read either
        torch.testing.assert_close(last(earlier, lengths)[1][0], last(x, lengths)[1][0])


@pytest.mark.parametrize("variant", ["mv_lstm_slow", "lstm_wide", "mean_pool", "last_frame"])
def test_every_new_variant_is_registered_and_trains(variant: str) -> None:
    assert variant in VARIANTS.names()
    torch.manual_seed(0)
    model = make_model(variant, input_size=6, hidden=8, n_classes=3, n_modes=0, dropout=0.0)
    x, lengths, y = torch.randn(5, 9, 6), torch.tensor([9, 9, 4, 7, 2]), torch.tensor([0, 1, 2, 0, 1])
    loss = torch.nn.functional.cross_entropy(model(x, lengths)["logits"], y)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
