"""The ``openvino`` and ``openvino-bf16`` CPU backends: the bundle's weights as an OpenVINO graph, built at load time.

The graph is written here op by op from the modules' tensors (no tracing, no ONNX file, nothing read from disk),
so what serves is exactly the weights the bundle's checksums pin. It computes what :mod:`detector.core.model`
computes, with two liberties that change only the order of floating-point sums: each BatchNorm (eval mode:
running statistics) is folded into the convolution before it, and the dropout before the output layer is left
out (it is the identity in eval mode). The BiGRU is OpenVINO's ``GRUSequence`` with ``linear_before_reset``
(torch's GRU: the reset gate scales the recurrent product *with* its bias), the gates reordered from torch's
(r, z, n) to OpenVINO's (z, r, h), and the input and recurrent biases of z and r added up front.

``openvino-bf16`` compiles the classifier with bfloat16 inference precision (AVX-512 BF16 or AMX dot products,
fp32 accumulation) and the novelty autoencoder in fp32 always, so novelty flags do not depend on the precision.
``openvino`` compiles both in fp32. On every backend here the probabilities are torch's fp32 softmax of the
graph's logits. A compiled model runs on ``torch.get_num_threads()`` threads when the backend is built (the
worker's ``--threads``), one per inference stream (see :class:`_Compiled`).
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch
from torch import nn

from detector.core.backends import Backend, BackendError, Outputs
from detector.core.model import INFERENCE_BATCH, Encoder, ResCAE, ResCAEBiGRU, encoded_length

Node = Any  # an OpenVINO graph node (openvino ships no usable type stubs for its opsets)


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 or AMX): where ``openvino-bf16`` is fast."""
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoBackend(Backend):
    """The classifier (fp32 or bf16) and the novelty autoencoder (fp32) as compiled OpenVINO models."""

    def __init__(
        self, model: ResCAEBiGRU, autoencoder: ResCAE | None, device: torch.device, precision: str = "f32"
    ) -> None:
        super().__init__(model, autoencoder, device)
        if device.type != "cpu":
            raise BackendError("the openvino backends run on the CPU")
        if precision not in ("f32", "bf16"):
            raise BackendError(f"unknown OpenVINO precision {precision!r}")
        self.name = "openvino" if precision == "f32" else "openvino-bf16"
        core = ov.Core()
        self._classifier = _Compiled(core, classifier_graph(model), precision)
        self._autoencoder = _Compiled(core, autoencoder_graph(autoencoder), "f32") if autoencoder is not None else None

    def run(self, matrix: np.ndarray) -> Outputs:
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not len(matrix):
            empty = np.zeros(0, dtype=np.float64) if self._autoencoder is not None else None
            return np.zeros((0, self.n_classes), dtype=np.float32), empty
        logits = self._classifier(matrix)
        probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        errors = self._autoencoder(matrix)[:, 0].astype(np.float64) if self._autoencoder is not None else None
        return probabilities, errors


class _Compiled:
    """One compiled model with one inference stream (one thread, one request) per torch thread: a batch is split
    into that many contiguous parts of at least :data:`MIN_ROWS_PER_STREAM` rows, scored side by side. (One
    stream with two threads leaves the second core mostly idle on this model at the worker's batch sizes: the
    GRU's steps are too small to share.) Calls are serialised (a request is not thread-safe), and parts hold at
    most :data:`INFERENCE_BATCH` rows, so memory stays bounded whatever the input size."""

    def __init__(self, core: ov.Core, graph: ov.Model, precision: str) -> None:
        streams = max(1, torch.get_num_threads())
        config = {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": streams,
            "NUM_STREAMS": streams,
            "ENABLE_CPU_PINNING": False,  # the cores are shared with the Kafka client's threads
        }
        compiled = core.compile_model(graph, "CPU", config)
        self._requests = [compiled.create_infer_request() for _ in range(streams)]
        self._lock = threading.Lock()

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        parts = _split(len(matrix), len(self._requests))
        outputs = []
        with self._lock:
            for group in range(0, len(parts), len(self._requests)):
                running = list(zip(self._requests, parts[group : group + len(self._requests)], strict=False))
                for request, (start, stop) in running:
                    request.start_async({0: matrix[start:stop]})
                for request, _ in running:
                    request.wait()
                    outputs.append(np.array(request.get_output_tensor(0).data, dtype=np.float32))  # a copy
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)


MIN_ROWS_PER_STREAM = 128


def _split(rows: int, streams: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` parts of ``rows``: as many as ``streams`` allows with at least
    :data:`MIN_ROWS_PER_STREAM` rows each, none over :data:`INFERENCE_BATCH`."""
    count = max(1, min(streams, rows // MIN_ROWS_PER_STREAM))
    count = max(count, -(-rows // INFERENCE_BATCH))
    bounds = [rows * i // count for i in range(count + 1)]
    return list(itertools.pairwise(bounds))


def classifier_graph(model: ResCAEBiGRU) -> ov.Model:
    """``[N, F]`` scaled features → ``[N, classes]`` logits, as :meth:`ResCAEBiGRU.forward` in eval mode."""
    gru = model.gru
    if not (gru.bidirectional and gru.batch_first and gru.bias) or gru.proj_size:
        raise BackendError("the openvino backends expect the bundle's bidirectional, batch-first GRU with biases")
    features = ops.parameter([-1, model.config.n_features], np.float32, name="features")
    encoded = _encoder(model.encoder, features, model.config.n_features)  # [N, C, L]
    sequence = ops.transpose(encoded, _i64([0, 2, 1]))  # [N, L, C]
    steps = encoded_length(model.config.n_features)
    batch = ops.gather(ops.shape_of(features), _i64([0]), _i64(0))  # [1]: N
    hidden = gru.hidden_size
    initial = ops.broadcast(_f32(np.zeros((1, 1, 1))), ops.concat([batch, _i64([2, hidden])], 0))
    lengths = ops.broadcast(np.array(steps, dtype=np.int32), batch)
    final = None
    for layer in range(gru.num_layers):
        weights, recurrent, bias = _gru_layer(gru, layer)
        out = ops.gru_sequence(
            sequence,
            initial,
            lengths,
            _f32(weights),
            _f32(recurrent),
            _f32(bias),
            hidden,
            "bidirectional",
            linear_before_reset=True,
        )
        # Y [N, 2, L, H] → [N, L, 2H] (forward, then backward: torch's layout); Ho [N, 2, H]
        sequence = ops.reshape(ops.transpose(out.output(0), _i64([0, 2, 1, 3])), _i64([0, steps, 2 * hidden]), True)
        final = out.output(1)
    last = ops.reshape(final, _i64([0, 2 * hidden]), True)  # torch.cat([hidden[-2], hidden[-1]], dim=1)
    head = model.head
    logits = ops.add(ops.matmul(last, _f32(_tensor(head.weight)), False, True), _f32(_tensor(head.bias)))
    return ov.Model([logits], [features], "flowwarden-classifier")


def autoencoder_graph(autoencoder: ResCAE) -> ov.Model:
    """``[N, F]`` scaled features → ``[N, 1]`` mean squared reconstruction error, as
    :func:`detector.core.novelty.reconstruction_error` (in fp32; the caller widens it to float64)."""
    width = autoencoder.n_features
    features = ops.parameter([-1, width], np.float32, name="features")
    hidden = _encoder(autoencoder.encoder, features, width)
    middle = encoded_length(width, 1)
    hidden = ops.relu(_transposed(autoencoder.up1, hidden, encoded_length(width), middle))
    reconstructed = ops.sigmoid(_transposed(autoencoder.up2, hidden, middle, width))  # [N, 1, F]
    squared = ops.squared_difference(ops.reshape(reconstructed, _i64([0, width]), True), features)
    errors = ops.reduce_mean(squared, _i64([1]), keep_dims=True)
    return ov.Model([errors], [features], "flowwarden-autoencoder")


def _encoder(encoder: Encoder, features: Node, width: int) -> Node:
    """The two residual blocks as 1-D convolutions over the feature axis: ``[N, F]`` → ``[N, C, L]``."""
    x = ops.reshape(features, _i64([0, 1, width]), True)
    for block in (encoder.rb1, encoder.rb2):
        main = ops.relu(_conv(block.main[0], block.main[1], x, stride=2, pad=1))
        main = _conv(block.main[3], block.main[4], main, stride=1, pad=1)
        shortcut = _conv(block.shortcut[0], block.shortcut[1], x, stride=2, pad=0)
        x = ops.relu(ops.add(main, shortcut))
    return x


def _conv(conv: nn.Module, norm: nn.Module, x: Node, stride: int, pad: int) -> Node:
    """A ``(1, k)`` bias-free convolution followed by eval-mode BatchNorm, folded into one 1-D convolution."""
    if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and conv.bias is None):
        raise BackendError("the openvino backends expect bias-free convolutions, each followed by a BatchNorm")
    scale = _tensor(norm.weight) / np.sqrt(_tensor(norm.running_var) + norm.eps)
    weight = _tensor(conv.weight)[:, :, 0, :] * scale[:, None, None]  # [out, in, k]
    shift = _tensor(norm.bias) - _tensor(norm.running_mean) * scale
    out = ops.convolution(x, _f32(weight), [stride], [pad], [pad], [1])
    return ops.add(out, _f32(shift[None, :, None]))


def _transposed(layer: nn.ConvTranspose2d, x: Node, width_in: int, width_out: int) -> Node:
    """A ``(1, k)`` transposed convolution with bias, padded at the end to ``width_out`` as torch's ``output_size``."""
    kernel, stride, pad = int(layer.kernel_size[1]), int(layer.stride[1]), int(layer.padding[1])
    extra = width_out - ((width_in - 1) * stride - 2 * pad + kernel)
    if not 0 <= extra < stride:
        raise BackendError(f"a transposed convolution cannot produce width {width_out} from {width_in}")
    weight = _tensor(layer.weight)[:, :, 0, :]  # [in, out, k], torch's layout and OpenVINO's
    out = ops.convolution_backprop_data(
        x, _f32(weight), [stride], pads_begin=[pad], pads_end=[pad], dilations=[1], output_padding=[extra]
    )
    return ops.add(out, _f32(_tensor(layer.bias)[None, :, None]))


def _gru_layer(gru: nn.GRU, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W ``[2, 3H, in]``, R ``[2, 3H, H]`` and B ``[2, 4H]`` of one bidirectional layer in OpenVINO's gate order."""
    hidden = gru.hidden_size
    z, r, n = slice(hidden, 2 * hidden), slice(0, hidden), slice(2 * hidden, 3 * hidden)  # torch: r, z, n
    weights, recurrent, biases = [], [], []
    for suffix in ("", "_reverse"):
        w_ih, w_hh = (_tensor(getattr(gru, f"weight_{kind}_l{layer}{suffix}")) for kind in ("ih", "hh"))
        b_ih, b_hh = (_tensor(getattr(gru, f"bias_{kind}_l{layer}{suffix}")) for kind in ("ih", "hh"))
        weights.append(np.concatenate([w_ih[z], w_ih[r], w_ih[n]]))
        recurrent.append(np.concatenate([w_hh[z], w_hh[r], w_hh[n]]))
        biases.append(np.concatenate([b_ih[z] + b_hh[z], b_ih[r] + b_hh[r], b_ih[n], b_hh[n]]))
    return np.stack(weights), np.stack(recurrent), np.stack(biases)


def _tensor(value: torch.Tensor | None) -> np.ndarray:
    if value is None:
        raise BackendError("the bundle's model lacks a tensor the openvino backends need (BatchNorm statistics?)")
    return np.asarray(value.detach().cpu().numpy(), dtype=np.float64)  # folding in float64, stored as float32


def _f32(array: np.ndarray) -> Node:
    return ops.constant(np.ascontiguousarray(array, dtype=np.float32))


def _i64(values: object) -> Node:
    return ops.constant(np.array(values, dtype=np.int64))
