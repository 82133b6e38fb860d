"""``make bench-train-step`` in its dry mode, and the hand-written BiGRU it measures against torch's GRU: the
candidate must compute torch's function and gradients, or its timing would compare different work."""

from __future__ import annotations

import orjson
import pytest
import torch
from torch import nn

from tests.bench.train_step import hand_gru_final_states, main


def test_the_hand_written_bigru_gives_torchs_final_states_and_gradients():
    torch.manual_seed(3)
    gru = nn.GRU(input_size=5, hidden_size=4, num_layers=2, batch_first=True, bidirectional=True)
    sequence = torch.randn(6, 7, 5, requires_grad=True)
    weights = torch.randn(4, 6, 4)
    results = []
    for final_states in (lambda: gru(sequence)[1], lambda: hand_gru_final_states(gru, sequence)):
        gru.zero_grad(set_to_none=True)
        sequence.grad = None
        states = final_states()
        (states * weights).sum().backward()
        results.append((states.detach(), sequence.grad.clone(), [p.grad.clone() for p in gru.parameters()]))
    (torch_states, torch_input_grad, torch_grads), (hand_states, hand_input_grad, hand_grads) = results
    torch.testing.assert_close(hand_states, torch_states)
    torch.testing.assert_close(hand_input_grad, torch_input_grad)
    for hand, reference in zip(hand_grads, torch_grads, strict=True):
        torch.testing.assert_close(hand, reference)


def test_the_train_step_bench_runs_dry_and_prints_one_json_line(capsys: pytest.CaptureFixture[str]):
    assert main(["--dry"]) == 0
    result = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bench"] == "train_step" and result["batch"] == 8
    assert result["hand_gru_max_gradient_difference"] < 1e-4
    for variant in ("torch", "hand_gru", "bf16_autocast"):
        assert result[variant]["wall_ms_per_step"] > 0 and result[variant]["cpu_ms_per_step"] > 0
