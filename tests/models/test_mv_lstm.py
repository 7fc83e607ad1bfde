"""The MV-LSTM cell against torch.nn.LSTM, padding invariance, and a toy problem it must learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.learn.train import fit
from pipeline.models.mv_lstm import MVLSTM
from pipeline.models.registry import VARIANTS, make_model
from pipeline.params import TrainParams

D, H = 5, 7


def _copy_into_lstm(mv: MVLSTM) -> torch.nn.LSTM:
    """A torch.nn.LSTM with the MV-LSTM's first 4H gate rows (same i, f, g, o layout)."""
    lstm = torch.nn.LSTM(D, H, batch_first=True).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(mv.weight_ih[: 4 * H])
        lstm.weight_hh_l0.copy_(mv.weight_hh[: 4 * H])
        lstm.bias_ih_l0.copy_(mv.bias[: 4 * H])
        lstm.bias_hh_l0.zero_()
    return lstm


def test_with_the_mode_input_gate_at_zero_it_is_exactly_an_lstm() -> None:
    torch.manual_seed(0)
    mv = MVLSTM(D, H, force_mode_gate_zero=True).double()
    lstm = _copy_into_lstm(mv)
    x = torch.randn(3, 9, D, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    out_mv, (h_mv, c_mv, m_mv) = mv(x)
    out_l, (h_l, c_l) = lstm(x2)
    torch.testing.assert_close(out_mv, out_l, atol=1e-5, rtol=0)
    torch.testing.assert_close(h_mv, h_l[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(c_mv, c_l[0], atol=1e-5, rtol=0)
    assert torch.count_nonzero(m_mv) == 0
    (out_mv.sin().sum() + h_mv.sum()).backward()
    (out_l.sin().sum() + h_l.sum()).backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(mv.weight_hh.grad[: 4 * H], lstm.weight_hh_l0.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(mv.weight_ih.grad[: 4 * H], lstm.weight_ih_l0.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(mv.bias.grad[: 4 * H], lstm.bias_ih_l0.grad, atol=1e-5, rtol=0)


def test_the_mode_cell_changes_the_output_when_enabled() -> None:
    torch.manual_seed(0)
    mv = MVLSTM(D, H).double()
    lstm = _copy_into_lstm(mv)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    assert not torch.allclose(mv(x)[0], lstm(x)[0], atol=1e-3)


def test_gates_are_one_fused_matrix() -> None:
    mv = MVLSTM(D, H)
    assert mv.weight_hh.shape == (7 * H, H) and mv.weight_ih.shape == (7 * H, D) and mv.bias.shape == (7 * H,)
    assert torch.all(mv.bias[5 * H : 6 * H] == 2.0)  # the mode forget gate starts open


@pytest.mark.parametrize("variant", ["lstm", "mv_lstm", "mv_lstm_sup", "mv_lstm_att"])
def test_padding_does_not_change_the_result(variant: str) -> None:
    torch.manual_seed(1)
    model = make_model(variant, input_size=D, hidden=H, n_classes=3, n_modes=2, dropout=0.0).eval()
    seqs = [torch.randn(n, D) for n in (4, 9, 6)]
    padded = torch.zeros(3, 9, D)
    for i, s in enumerate(seqs):
        padded[i, : len(s)] = s
    padded[0, 4:] = 100.0  # garbage after the end must be ignored
    lengths = torch.tensor([4, 9, 6])
    batch = model(padded, lengths)["logits"]
    for i, s in enumerate(seqs):
        alone = model(s[None], torch.tensor([len(s)]))["logits"]
        torch.testing.assert_close(batch[i], alone[0], atol=1e-5, rtol=0)


def test_mv_lstm_outputs_are_zero_after_each_sequence_ends() -> None:
    mv = MVLSTM(D, H)
    out, _ = mv(torch.randn(2, 5, D), torch.tensor([2, 5]))
    assert torch.count_nonzero(out[0, 2:]) == 0


def test_unknown_variant_lists_the_known_ones() -> None:
    from pipeline.errors import PipelineError

    known = ["last_frame", "lstm", "lstm_wide", "mean_pool", "mv_lstm", "mv_lstm_att", "mv_lstm_slow", "mv_lstm_sup"]
    assert VARIANTS.names() == known
    with pytest.raises(
        PipelineError,
        match=rf"^train.variants: unknown model variant 'gru' \(known: {', '.join(known)}\)$",
    ):
        make_model("gru", input_size=D, hidden=H, n_classes=2)


@pytest.mark.parametrize("variant", ["lstm", "mv_lstm", "mv_lstm_sup", "mv_lstm_att"])
def test_a_tiny_training_run_learns_a_separable_toy_problem(variant: str) -> None:
    """Class = the sign of a feature that appears only late in the sequence; static noise per
    sequence (a 'mode') is irrelevant."""
    rng = np.random.default_rng(0)
    n, T = 120, 8
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, T, 4)).astype(np.float32)
    x += rng.normal(0, 1.0, (n, 1, 4)).astype(np.float32)  # a static offset per sequence
    x[:, T // 2 :, 0] += np.where(y == 1, 2.0, -2.0)[:, None]
    ids = [f"t{i}" for i in range(n)]
    modes = np.array(["a" if i % 2 else "b" for i in range(n)])
    data = {
        "take_ids": np.array(ids),
        "features": x.reshape(n * T, 4),
        "offsets": np.arange(n + 1) * T,
        "lengths": np.full(n, T),
        "labels": y,
        "modes": modes,
    }  # the ragged layout of the features file
    fold = {"train": ids[:80], "val": ids[80:]}
    p = TrainParams(
        variants=[variant],
        seeds=[0],
        hidden=16,
        epochs=40,
        patience=10,
        batch_size=16,
        lr=0.01,
        weight_decay=0.0,
        dropout=0.0,
        mode_loss_weight=0.3,
        adversarial_weight=0.1,
        workers=1,
    )
    ckpt, history, _ = fit(variant, data, fold, p, seed=0, n_classes=2)
    assert ckpt["val_acc"] >= 0.95, history[-1]
