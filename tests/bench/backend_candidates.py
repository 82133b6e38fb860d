"""Serving-backend candidates measured side by side on one bundle (``make bench-candidates``; never ``make test``).

``eager``, ``int8``, ``openvino`` and ``openvino-bf16`` (and the CUDA backends) ship in
:mod:`detector.core.backends`; this script keeps the measurement behind that choice reproducible: for each
candidate's classifier (no preprocessing, no novelty model), flows/s at one batch size (best of interleaved
runs, on a thread of its own like the worker), the share of labels identical to the fp32 model's on the given
flows, the largest probability difference, and for int8 how often a flow's label changes with the batch it is
scored in (dynamic quantization scales activations per batch). Candidates this torch or machine cannot run
report their error. ONNX Runtime is measured when it is installed (it is no dependency of ours:
``pip install onnxruntime`` into the venv to include it).

    python -m tests.bench.backend_candidates [--bundle B --csv FLOWS.csv.gz] [--batch 512] [--skip-compile]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings

import numpy as np
import orjson
import torch
from torch import nn

from detector.core.backends import Int8Classifier
from detector.core.bundle import load_bundle
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.model import ResCAEBiGRU
from detector.tools.e2e import records_from_csv
from detector.tools.measure import best_rates, machine
from tests.bench.bundle import bench_bundle


def quantized(model: ResCAEBiGRU) -> nn.Module:
    """``torch.ao``'s default dynamic quantization of the GRU and Linear layers (per-tensor weights, 7-bit
    activations): the first int8 candidate measured."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.GRU, nn.Linear}, dtype=torch.qint8)


class HandGRU:
    """The classifier with BN folded into the convolutions and a hand-written BiGRU: one matrix product for the
    input projections of every step and both directions, then one batched product per step for both directions."""

    def __init__(self, model: ResCAEBiGRU) -> None:
        encoder = model.encoder
        self.blocks = [
            (*_folded(b.main[0], b.main[1]), *_folded(b.main[3], b.main[4]), *_folded(b.shortcut[0], b.shortcut[1]))
            for b in (encoder.rb1, encoder.rb2)
        ]
        gru = model.gru
        hidden = self.hidden = gru.hidden_size
        self.layers = []
        for layer in range(gru.num_layers):
            weight = {d: getattr(gru, f"weight_ih_l{layer}{d}") for d in ("", "_reverse")}
            bias = {d: getattr(gru, f"bias_ih_l{layer}{d}") for d in ("", "_reverse")}
            recurrent = {d: getattr(gru, f"weight_hh_l{layer}{d}") for d in ("", "_reverse")}
            recurrent_bias = {d: getattr(gru, f"bias_hh_l{layer}{d}") for d in ("", "_reverse")}
            w_in = torch.cat([weight[""], weight["_reverse"]]).t().contiguous()
            b_in = torch.cat([bias[""], bias["_reverse"]]).clone()
            b_in[: 2 * hidden] += recurrent_bias[""][: 2 * hidden]
            b_in[3 * hidden : 5 * hidden] += recurrent_bias["_reverse"][: 2 * hidden]
            w_hh = torch.stack([recurrent[""].t(), recurrent["_reverse"].t()]).contiguous()
            b_hn = torch.stack([recurrent_bias[""][2 * hidden :], recurrent_bias["_reverse"][2 * hidden :]])[:, None]
            self.layers.append((w_in.detach(), b_in.detach(), w_hh.detach(), b_hn.detach().contiguous()))
        self.head_w, self.head_b = model.head.weight.detach().t().contiguous(), model.head.bias.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], 1, 1, x.shape[-1])
        for w1, b1, w2, b2, ws, bs in self.blocks:
            main = torch.conv2d(
                torch.relu(torch.conv2d(h, w1, b1, stride=(1, 2), padding=(0, 1))), w2, b2, padding=(0, 1)
            )
            h = torch.relu(main + torch.conv2d(h, ws, bs, stride=(1, 2)))
        n, hidden = h.shape[0], self.hidden
        sequence = h.squeeze(2).permute(2, 0, 1)  # [L, N, C]
        steps = sequence.shape[0]
        for index, (w_in, b_in, w_hh, b_hn) in enumerate(self.layers):
            gates = torch.addmm(b_in, sequence.reshape(steps * n, -1), w_in).view(steps, n, 2, 3 * hidden)
            gates = torch.stack([gates[:, :, 0], gates[:, :, 1].flip(0)], 1)  # [L, 2, N, 3H], backward reversed
            state = torch.zeros(2, n, hidden)
            top = index == len(self.layers) - 1
            outputs = None if top else torch.empty(steps, 2, n, hidden)
            for t in range(steps):
                recurrent = torch.bmm(state, w_hh)
                step = gates[t]
                rz = torch.sigmoid(step[..., : 2 * hidden] + recurrent[..., : 2 * hidden])
                candidate = torch.tanh(
                    torch.addcmul(step[..., 2 * hidden :], rz[..., :hidden], recurrent[..., 2 * hidden :] + b_hn)
                )
                state = torch.lerp(candidate, state, rz[..., hidden:])
                if outputs is not None:
                    outputs[t] = state
            if outputs is not None:
                sequence = torch.cat([outputs[:, 0], outputs[:, 1].flip(0)], -1)
        return torch.addmm(self.head_b, torch.cat([state[0], state[1]], 1), self.head_w)


def _folded(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return (conv.weight * scale[:, None, None, None]).detach(), (norm.bias - norm.running_mean * scale).detach()


def candidates(model: ResCAEBiGRU, sample: torch.Tensor, compile: bool = True) -> dict[str, object]:
    found: dict[str, object] = {
        "eager fp32": model,
        "int8 torch.ao default (GRU + Linear)": quantized(model),
        "int8 per-channel, 8-bit activations (GRU)": Int8Classifier(model),
    }
    found["hand-written GRU fp32"] = HandGRU(model)

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()

    found["eager bf16 autocast"] = bf16
    for precision in ("f32", "bf16"):
        found[f"OpenVINO {precision} (openvino backends)"] = _openvino(model, precision)
    found["ONNX Runtime fp32 (torch.onnx TorchScript export)"] = _onnxruntime(model, sample)
    if not compile:
        return found
    for name, target in (
        ("torch.compile eager", model),
        ("torch.compile hand-written", found["hand-written GRU fp32"]),
    ):
        try:
            started = time.perf_counter()
            compiled = torch.compile(target, dynamic=False)
            with torch.inference_mode():
                compiled(sample)
            found[name] = compiled
            print(f"{name}: compiled in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        except Exception as exc:
            found[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return found


def _openvino(model: ResCAEBiGRU, precision: str) -> object:
    try:
        from detector.core.openvino_cpu import OpenVinoBackend

        backend = OpenVinoBackend(model, None, torch.device("cpu"), precision)
    except Exception as exc:  # not installed, or this CPU cannot
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return lambda x: torch.from_numpy(backend._classifier(x.numpy()))


def _onnxruntime(model: ResCAEBiGRU, sample: torch.Tensor) -> object:
    """The model exported with a dynamic batch axis, in eval mode (dropout off, BatchNorm's running statistics):
    its logits match the fp32 model's to 1e-5 (an export with a fixed batch, or in training mode, does not)."""
    try:
        import io

        import onnxruntime

        exported = io.BytesIO()
        torch.onnx.export(
            model.eval(),
            (sample,),
            exported,
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
            opset_version=17,
        )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        session = onnxruntime.InferenceSession(exported.getvalue(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # not installed, or the exporter is gone from this torch
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return lambda x: torch.from_numpy(session.run(None, {"x": x.numpy()})[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", help="a bundle (default: the one make bench cached)")
    parser.add_argument("--csv", nargs="+", help="flows (default: the cached bundle's test split)")
    parser.add_argument("--cached", action="store_true", help="use the bundle make bench cached (trained if missing)")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--flows", type=int, default=8192, help="flows timed per run")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.cached or not args.bundle:
        prepared = bench_bundle("cpu")
        args.bundle, args.csv = prepared.bundle, [prepared.test_split]
    bundle = load_bundle(args.bundle)
    decoder = FlowDecoder(bundle.preprocessor.numeric, tuple(bundle.preprocessor.categories))
    flows = [f for f in map(decoder.decode_bytes, records_from_csv(args.csv)) if isinstance(f, DecodedFlow)]
    pre = bundle.preprocessor
    matrix = torch.from_numpy(pre.transform(np.stack([f.numeric for f in flows])))
    timed = matrix[: args.flows]
    model = bundle.model.eval()
    with torch.inference_mode():
        found = candidates(model, timed[: args.batch], compile=not args.skip_compile)
    runnable = {name: fn for name, fn in found.items() if callable(fn)}
    parts = list(timed.split(args.batch))

    def runner(fn):
        def run() -> None:
            with torch.inference_mode():
                for part in parts:
                    torch.softmax(fn(part), 1)

        return run

    rates = best_rates({name: (runner(fn), len(timed)) for name, fn in runnable.items()}, args.repeat)
    with torch.inference_mode():
        reference = torch.cat([model(p) for p in matrix.split(args.batch)]).softmax(1)
        result = {}
        for name, fn in found.items():
            if not callable(fn):
                result[name] = {"error": fn}
                continue
            probabilities = torch.cat([fn(p) for p in matrix.split(args.batch)]).float().softmax(1)
            result[name] = {
                "flows_per_s": round(rates[name].per_second),
                "speedup": round(rates[name].per_second / rates["eager fp32"].per_second, 2),
                "label_agreement": round(float((probabilities.argmax(1) == reference.argmax(1)).float().mean()), 5),
                "max_probability_difference": float((probabilities - reference).abs().max()),
            }
        int8 = found["int8 per-channel, 8-bit activations (GRU)"]
        alone = torch.cat([int8(matrix[i : i + 1]) for i in range(min(len(matrix), 2000))]).argmax(1)
        batched = torch.cat([int8(p) for p in matrix[: len(alone)].split(args.batch)]).argmax(1)
        result["int8 per-channel, 8-bit activations (GRU)"]["labels_alone_vs_in_batch_agreement"] = round(
            float((alone == batched).float().mean()), 5
        )
    print(orjson.dumps({"batch": args.batch, "rows": len(matrix), "machine": machine(), "candidates": result}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
