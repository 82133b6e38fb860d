"""Serving backends: one bundle's fp32 weights, run the fastest way the device allows.

A backend is *derived from the bundle at load time*; nothing new is stored in the bundle, so the bundle stays
the one verified artefact and every backend serves exactly the weights its checksums pin. Each backend
computes the classifier's probabilities and, when the bundle has one, the novelty model's reconstruction
error for a preprocessed matrix.

=================  ======  ==========================================================================
name               device  what it runs
=================  ======  ==========================================================================
``eager``          any     the fp32 model as trained, torch eager: the reference (``trainer`` evaluates
                           with it, so report numbers never depend on a serving backend)
``int8``           CPU     the BiGRU with int8 weights (per output channel) and activations quantized per
                           call, fbgemm's AVX-512/VNNI kernels on x86 (:class:`Int8Classifier`); the
                           convolutional encoder and the output layer stay fp32
``openvino``       CPU     the whole model as an OpenVINO graph built from the weights, fp32
                           (:mod:`detector.core.openvino_cpu`; the ``openvino`` extra)
``openvino-bf16``  CPU     the same with the classifier in bfloat16 (products summed in fp32); the novelty
                           model stays fp32
``cuda-graphs``    CUDA    fp32, one CUDA graph per batch-size bucket, pinned host buffers and
                           non-blocking copies; :meth:`Backend.start` returns before the GPU is done
``cuda-graphs-bf16``, ``cuda-graphs-fp16``  the same with the classifier in bfloat16 / float16
=================  ======  ==========================================================================

``auto`` picks ``cuda-graphs`` on a GPU. On a CPU it picks ``openvino-bf16`` where OpenVINO is installed and
the CPU has native bfloat16 (AVX-512 BF16 or AMX), ``openvino`` where it has not, and without OpenVINO
``int8`` on x86, else ``eager`` (README "Performance" has the measurements behind that order); the backend's
:attr:`Backend.note` says why ``auto`` did not get its first choice. The novelty model always runs in fp32 on
every backend, so its flags do not depend on the backend (on the torch CPU backends they are the eager model's
exactly; OpenVINO and a GPU add up the same fp32 terms in another order), and it costs little beside the
classifier.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from detector.core.model import INFERENCE_BATCH, ResCAE, ResCAEBiGRU, as_image, in_batches
from detector.core.novelty import reconstruction_error

CPU_BACKENDS = ("eager", "int8", "openvino", "openvino-bf16")
CUDA_BACKENDS = ("eager", "cuda-graphs", "cuda-graphs-bf16", "cuda-graphs-fp16")
BACKENDS = ("auto", *dict.fromkeys((*CPU_BACKENDS, *CUDA_BACKENDS)))
AUTO = {"cpu": "openvino-bf16", "cuda": "cuda-graphs"}  # the first choice; see choose() for the CPU's fallbacks
# Batch sizes a CUDA graph is captured for; a batch runs in the smallest bucket that holds it (padded).
CUDA_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)


class BackendError(ValueError):
    """A backend that does not exist, or does not run on the chosen device."""


Outputs = tuple[np.ndarray, np.ndarray | None]  # probabilities [N, classes] float32, reconstruction error [N]


class Pending:
    """Scores that are being computed; :meth:`wait` returns them (once)."""

    def wait(self) -> Outputs:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Ready(Pending):
    """Scores computed already (every CPU backend computes in :meth:`Backend.start`)."""

    outputs: Outputs

    def wait(self) -> Outputs:
        return self.outputs


class Backend:
    """Runs one bundle's classifier (and novelty autoencoder) on one device."""

    name: str = ""
    note: str = ""  # why ``auto`` did not get its first choice (empty when it did, or for a named backend)
    asynchronous = False  # start() returns before the device has finished (the caller may work meanwhile)

    def __init__(self, model: ResCAEBiGRU, autoencoder: ResCAE | None, device: torch.device) -> None:
        self.device = device
        self.n_classes = model.config.n_classes
        self.autoencoder = autoencoder

    def start(self, matrix: np.ndarray) -> Pending:
        """Begin scoring a preprocessed float32 matrix ``[N, inputs]``."""
        return Ready(self.run(matrix))

    def run(self, matrix: np.ndarray) -> Outputs:
        """Probabilities and reconstruction errors (None without a novelty model) for a preprocessed matrix."""
        return self.start(matrix).wait()

    def _errors(self, matrix: np.ndarray) -> np.ndarray | None:
        return reconstruction_error(self.autoencoder, matrix, self.device) if self.autoencoder is not None else None


def predict_proba(
    model: ResCAEBiGRU, matrix: np.ndarray, device: torch.device, batch_size: int = INFERENCE_BATCH
) -> np.ndarray:
    """Softmax probabilities ``[N, classes]`` for a preprocessed matrix; the model must be in eval mode."""
    return probabilities(model, model.config.n_classes, matrix, device, batch_size)


def probabilities(
    classify: Callable[[torch.Tensor], torch.Tensor],
    n_classes: int,
    matrix: np.ndarray,
    device: torch.device,
    batch_size: int = INFERENCE_BATCH,
) -> np.ndarray:
    """Softmax of ``classify``'s logits for a preprocessed matrix, ``batch_size`` rows at a time."""
    outputs = in_batches(lambda x: torch.softmax(classify(x), dim=1).float(), matrix, device, batch_size)
    if not outputs:
        return np.zeros((0, n_classes), dtype=np.float32)
    return np.concatenate(outputs)


class EagerBackend(Backend):
    """The fp32 model as trained (the reference every other backend is measured against)."""

    name = "eager"

    def __init__(self, model: ResCAEBiGRU, autoencoder: ResCAE | None, device: torch.device) -> None:
        super().__init__(model, autoencoder, device)
        self.model = model

    def run(self, matrix: np.ndarray) -> Outputs:
        return predict_proba(self.model, matrix, self.device), self._errors(matrix)


class Int8Backend(Backend):
    """The BiGRU with int8 weights (see :class:`Int8Classifier`); the bundle's model is left as it is."""

    name = "int8"

    def __init__(self, model: ResCAEBiGRU, autoencoder: ResCAE | None, device: torch.device) -> None:
        super().__init__(model, autoencoder, device)
        self.model = Int8Classifier(model)

    def run(self, matrix: np.ndarray) -> Outputs:
        return probabilities(self.model, self.n_classes, matrix, self.device), self._errors(matrix)


class Int8Classifier:
    """The classifier with its BiGRU's weights in int8: the convolutional encoder and the output layer stay fp32.

    Each GRU weight matrix is quantized per output channel (symmetric, one scale per row), activations per call
    at full 8-bit range (``reduce_range=False``: AVX-512 VNNI multiplies u8 x s8 into 32-bit sums without the
    16-bit intermediate that the 7-bit default guards against), and the whole recurrence runs in torch's
    quantized GRU (fbgemm). On the quick bundle's 13,026 test flows that changes 2 labels of the fp32 model's,
    all near-ties; ``torch.ao``'s default dynamic quantization (per-tensor weights, 7-bit activations) changed
    16 (README "Performance").
    """

    def __init__(self, model: ResCAEBiGRU) -> None:
        self.model = model
        gru = model.gru
        if not (gru.bidirectional and gru.batch_first and gru.bias):
            raise BackendError("the int8 backend expects the bundle's bidirectional, batch-first GRU with biases")
        self.params = [
            _cell_params(gru, layer, suffix) for layer in range(gru.num_layers) for suffix in ("", "_reverse")
        ]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        model, gru = self.model, self.model.gru
        sequence = model.encoder(as_image(x)).squeeze(2).permute(0, 2, 1)  # [N, L, C], as ResCAEBiGRU.forward
        initial = torch.zeros(2 * gru.num_layers, sequence.shape[0], gru.hidden_size)
        _, hidden = torch.quantized_gru(sequence, initial, self.params, True, gru.num_layers, 0.0, False, True, True)
        logits: torch.Tensor = model.head(torch.cat([hidden[-2], hidden[-1]], dim=1))
        return logits


def _cell_params(gru: nn.GRU, layer: int, suffix: str) -> object:
    """One direction of one layer of ``gru`` packed for fbgemm: int8 weights, fp32 biases."""

    def tensor(name: str) -> torch.Tensor:
        weight: torch.Tensor = getattr(gru, f"{name}_l{layer}{suffix}")
        return weight.detach().float().contiguous()

    packed = {
        kind: torch.ops.quantized.linear_prepack(_per_channel_int8(tensor(f"weight_{kind}")), tensor(f"bias_{kind}"))
        for kind in ("ih", "hh")
    }
    return torch.ops.quantized.make_quantized_cell_params_dynamic(
        packed["ih"],
        packed["hh"],
        tensor("bias_ih"),
        tensor("bias_hh"),
        False,  # reduce_range=False
    )


def _per_channel_int8(weight: torch.Tensor) -> torch.Tensor:
    scales = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0).double()
    zero_points = torch.zeros(len(weight), dtype=torch.long)
    with warnings.catch_warnings():
        # torch 2.13 deprecates quantized tensors in favour of the torchao package; they work in the torch we pin
        # (and in 2.11), and ``make bench`` checks the agreement after every torch upgrade.
        warnings.simplefilter("ignore")
        return torch.quantize_per_channel(weight, scales, zero_points, 0, torch.qint8)


def choose(name: str, device: torch.device) -> str:
    """The backend ``name`` resolves to on ``device`` (``auto``: the fastest measured there)."""
    return resolve(name, device)[0]


def resolve(name: str, device: torch.device) -> tuple[str, str]:
    """The backend ``name`` resolves to on ``device``, and for ``auto`` why it did not get its first choice
    (empty when it did). Raises :class:`BackendError` for an unknown backend or one the device cannot run."""
    kind = device.type
    if name == "auto":
        if kind != "cpu":
            return AUTO.get(kind, "eager"), ""
        if not _openvino_installed():
            # int8 is measured with x86's fbgemm kernels only (an ARM CPU gets the fp32 model)
            fallback = "int8" if _fbgemm() else "eager"
            return fallback, f"OpenVINO is not installed (the openvino extra): --backend auto serves {fallback}"
        if not _bf16():
            return "openvino", "this CPU has no native bfloat16 (AVX-512 BF16 or AMX): --backend auto serves openvino"
        return AUTO["cpu"], ""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    allowed = CUDA_BACKENDS if kind == "cuda" else CPU_BACKENDS
    if name not in allowed:
        raise BackendError(f"backend {name} does not run on {kind}: choose one of {', '.join(('auto', *allowed))}")
    if name.startswith("openvino") and not _openvino_installed():
        raise BackendError(f"backend {name} needs OpenVINO, which is not installed (the openvino extra)")
    return name, ""


def _bf16() -> bool:
    from detector.core.openvino_cpu import bf16_supported

    return bf16_supported()


def _openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _fbgemm() -> bool:
    return bool({"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines))


def build_backend(
    name: str, model: ResCAEBiGRU, autoencoder: ResCAE | None, device: torch.device, buckets: Sequence[int] = ()
) -> Backend:
    """The backend ``name`` (or ``auto``) for a classifier and its optional autoencoder, both already on ``device``
    and in eval mode. ``buckets`` overrides the CUDA graphs' batch sizes."""
    chosen, note = resolve(name, device)
    backend = _build(chosen, model, autoencoder, device, buckets)
    backend.note = note
    return backend


def _build(
    name: str, model: ResCAEBiGRU, autoencoder: ResCAE | None, device: torch.device, buckets: Sequence[int]
) -> Backend:
    if name == "eager":
        return EagerBackend(model, autoencoder, device)
    if name == "int8":
        return Int8Backend(model, autoencoder, device)
    if name.startswith("openvino"):
        from detector.core.openvino_cpu import OpenVinoBackend  # the optional extra

        return OpenVinoBackend(model, autoencoder, device, "bf16" if name == "openvino-bf16" else "f32")
    from detector.core.cudagraphs import CudaGraphsBackend  # only a GPU machine needs it

    dtype = {"cuda-graphs": torch.float32, "cuda-graphs-bf16": torch.bfloat16, "cuda-graphs-fp16": torch.float16}
    return CudaGraphsBackend(model, autoencoder, device, dtype[name], tuple(buckets) or CUDA_BUCKETS, name)
