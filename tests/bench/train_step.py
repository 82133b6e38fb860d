"""``make bench-train-step``: what one fine-tuning step costs on this CPU, and two candidate ways to cheapen it,
measured side by side in one run (README "Training time"). Never part of ``make test``; nothing asserts a time.

One SAM step (two forward and backward passes, focal loss) of the real network shape (83 features, 16 classes,
the paper's batch of 256) on generated rows, each variant timed the same way (best of ``--repeat`` interleaved
runs of ``--steps`` steps, wall and CPU milliseconds per step):

* ``torch``: the model as ``trainer fit`` trains it (torch's CPU GRU, fp32);
* ``hand_gru``: the same weights through :class:`BiGRULayer`, a bidirectional GRU layer written for training:
  both directions in one batched matrix product per step, the input projections and the weight gradients one
  product each over all steps, the backward derived by hand;
* ``bf16_autocast``: torch's model under ``torch.autocast("cpu", torch.bfloat16)``.

It also prints how far the hand-written layer's gradients are from torch's on the same batch
(``hand_gru_max_gradient_difference``), so a faster variant that computed something else would show. Neither
candidate is used by the trainer (the README says why).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson
import torch
from torch import nn

from detector.core.model import ModelConfig, ResCAEBiGRU, as_image
from trainer.losses import FocalLoss
from trainer.sam import SAM


class BiGRULayer(torch.autograd.Function):
    """One bidirectional GRU layer (torch's gate order r, z, n and equations), both directions at once.

    ``x`` is ``[B, T, I]``; the weights are the two directions' stacked: ``w_ih [2, 3H, I]``, ``w_hh [2, 3H, H]``,
    ``b_ih`` and ``b_hh [2, 3H]``. Returns the outputs ``[B, T, 2H]`` (forward then backward direction, as
    ``nn.GRU``) and the final hidden states ``[2, B, H]``; the initial state is zero.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
    ):  # type: ignore[override]
        batch, steps, inputs = x.shape
        hidden = w_hh.shape[2]
        projected = torch.addmm(
            b_ih.reshape(-1), x.reshape(batch * steps, inputs), w_ih.reshape(6 * hidden, inputs).t()
        )
        projected = projected.view(batch, steps, 2, 3 * hidden)
        # step-major, the backward direction's time reversed: gates[s] holds both directions' inputs at step s
        gates = torch.stack((projected[:, :, 0], projected[:, :, 1].flip(1))).permute(2, 0, 1, 3).contiguous()
        states = x.new_zeros(steps + 1, 2, batch, hidden)
        reset_update = x.new_empty(steps, 2, batch, 2 * hidden)
        candidates = x.new_empty(steps, 2, batch, hidden)
        hidden_new = x.new_empty(steps, 2, batch, hidden)  # W_hn h + b_hn, which the backward needs
        for step in range(steps):
            recurrent = torch.baddbmm(b_hh.unsqueeze(1), states[step], w_hh.transpose(1, 2))
            torch.sigmoid(gates[step, :, :, : 2 * hidden] + recurrent[:, :, : 2 * hidden], out=reset_update[step])
            hidden_new[step] = recurrent[:, :, 2 * hidden :]
            reset = reset_update[step, :, :, :hidden]
            torch.tanh(torch.addcmul(gates[step, :, :, 2 * hidden :], reset, hidden_new[step]), out=candidates[step])
            update = reset_update[step, :, :, hidden:]
            torch.addcmul(candidates[step], update, states[step] - candidates[step], out=states[step + 1])
        ctx.save_for_backward(x, w_ih, w_hh, states, reset_update, candidates, hidden_new)
        outputs = torch.cat((states[1:, 0], states[1:, 1].flip(0)), 2).transpose(0, 1)
        return outputs, states[steps].clone()

    @staticmethod
    def backward(ctx: Any, d_outputs: torch.Tensor, d_final: torch.Tensor):  # type: ignore[override]
        x, w_ih, w_hh, states, reset_update, candidates, hidden_new = ctx.saved_tensors
        batch, steps, inputs = x.shape
        hidden = w_hh.shape[2]
        d_outputs = d_outputs.transpose(0, 1)
        d_steps = torch.stack((d_outputs[:, :, :hidden], d_outputs[:, :, hidden:].flip(0)), 1)
        d_gates = x.new_empty(steps, 2, batch, 3 * hidden)
        d_recurrent = x.new_empty(steps, 2, batch, 3 * hidden)
        d_state = d_final.clone()
        for step in range(steps - 1, -1, -1):
            d_state = d_state + d_steps[step]
            reset = reset_update[step, :, :, :hidden]
            update = reset_update[step, :, :, hidden:]
            candidate = candidates[step]
            d_candidate = d_state * (1 - update) * (1 - candidate * candidate)
            d_update = d_state * (states[step] - candidate)
            d_gates[step, :, :, : 2 * hidden] = torch.cat((d_candidate * hidden_new[step], d_update), 2) * (
                reset_update[step] * (1 - reset_update[step])
            )
            d_gates[step, :, :, 2 * hidden :] = d_candidate
            d_recurrent[step, :, :, : 2 * hidden] = d_gates[step, :, :, : 2 * hidden]
            d_recurrent[step, :, :, 2 * hidden :] = d_candidate * reset
            d_state = torch.baddbmm(d_state * update, d_recurrent[step], w_hh)
        previous = states[:-1].permute(1, 0, 2, 3).reshape(2, steps * batch, hidden)
        d_recurrent_all = d_recurrent.permute(1, 0, 2, 3).reshape(2, steps * batch, 3 * hidden)
        d_gates_all = torch.stack((d_gates[:, 0], d_gates[:, 1].flip(0)), 2).transpose(0, 1)
        d_gates_all = d_gates_all.reshape(batch * steps, 6 * hidden)
        flat = x.reshape(batch * steps, inputs)
        return (
            torch.mm(d_gates_all, w_ih.reshape(6 * hidden, inputs)).view(batch, steps, inputs),
            torch.mm(d_gates_all.t(), flat).view(2, 3 * hidden, inputs),
            torch.bmm(d_recurrent_all.transpose(1, 2), previous),
            d_gates_all.sum(0).view(2, 3 * hidden),
            d_recurrent_all.sum(1),
        )


def hand_gru_final_states(gru: nn.GRU, sequence: torch.Tensor) -> torch.Tensor:
    """``nn.GRU(sequence)[1]`` (``batch_first``, bidirectional, zero initial state) through :class:`BiGRULayer`."""
    finals = []
    for layer in range(gru.num_layers):

        def both(name: str, layer: int = layer) -> torch.Tensor:
            return torch.stack((getattr(gru, f"{name}_l{layer}"), getattr(gru, f"{name}_l{layer}_reverse")))

        sequence, final = BiGRULayer.apply(
            sequence, both("weight_ih"), both("weight_hh"), both("bias_ih"), both("bias_hh")
        )
        finals.append(final)
    return torch.cat(finals, 0)


def hand_gru_logits(model: ResCAEBiGRU, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` with the GRU replaced by :func:`hand_gru_final_states` (same weights)."""
    sequence = model.encoder(as_image(x)).squeeze(2).permute(0, 2, 1)
    hidden = hand_gru_final_states(model.gru, sequence)
    return model.head(model.dropout(torch.cat([hidden[-2], hidden[-1]], dim=1)))


def bf16_logits(model: ResCAEBiGRU, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    return logits.float()


VARIANTS: dict[str, Callable[[ResCAEBiGRU, torch.Tensor], torch.Tensor]] = {
    "torch": lambda model, x: model(x),
    "hand_gru": hand_gru_logits,
    "bf16_autocast": bf16_logits,
}


def gradient_difference(model: ResCAEBiGRU, x: torch.Tensor, y: torch.Tensor) -> float:
    """The largest difference between the parameter gradients of ``torch`` and ``hand_gru`` on one batch
    (dropout off, so both see the same function)."""
    model.eval()  # dropout and batch statistics fixed: both variants compute the same function
    criterion = FocalLoss(gamma=2.0)
    grads = []
    for name in ("torch", "hand_gru"):
        model.zero_grad(set_to_none=True)
        criterion(VARIANTS[name](model, x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    model.train()
    return max(float((a - b).abs().max()) for a, b in zip(*grads, strict=True))


def measure(batch: int, steps: int, repeat: int) -> dict[str, Any]:
    """Each variant's SAM step, best of ``repeat`` interleaved runs of ``steps`` steps, on one model copy each."""
    torch.manual_seed(0)
    x, y = torch.rand(batch, 83), torch.randint(0, 16, (batch,))
    reference = ResCAEBiGRU(ModelConfig(83, 16))
    result: dict[str, Any] = {"batch": batch, "steps": steps, "threads": torch.get_num_threads()}
    result["hand_gru_max_gradient_difference"] = gradient_difference(reference, x, y)
    steppers = {name: _stepper(reference, forward, x, y) for name, forward in VARIANTS.items()}
    best: dict[str, tuple[float, float]] = {}
    for stepper in steppers.values():
        stepper()  # warm-up
    for _ in range(repeat):
        for name, stepper in steppers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                stepper()
            timed = ((time.perf_counter() - wall) / steps * 1e3, (time.process_time() - cpu) / steps * 1e3)
            if name not in best or timed[0] < best[name][0]:
                best[name] = timed
    for name, (wall_ms, cpu_ms) in best.items():
        result[name] = {"wall_ms_per_step": round(wall_ms, 1), "cpu_ms_per_step": round(cpu_ms, 1)}
    return result


def _stepper(reference: ResCAEBiGRU, forward, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    model = ResCAEBiGRU(reference.config)
    model.load_state_dict(reference.state_dict())
    model.train()
    base = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sam = SAM(model.parameters(), base, rho=0.05)
    criterion = FocalLoss(gamma=2.0)

    def closure() -> torch.Tensor:
        loss = criterion(forward(model, x), y)
        loss.backward()
        return loss

    return lambda: sam.step(model, closure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="SAM steps per timed run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs; the fastest is kept")
    parser.add_argument("--dry", action="store_true", help="tiny sizes: checks the script, not speed")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dry:
        args.batch, args.steps, args.repeat = 8, 1, 1
    print(orjson.dumps({"bench": "train_step", **measure(args.batch, args.steps, args.repeat)}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
