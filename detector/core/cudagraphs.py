"""The GPU serving backend: CUDA graphs per batch-size bucket, pinned host buffers, non-blocking copies.

On a GPU the model itself is nearly free; what costs is launching its ~100 small kernels one by one from
Python, and waiting for copies. So each batch size in use gets a *slot*: page-locked (pinned) host buffers for
the input and the outputs, a device input buffer, and a CUDA graph of the whole forward pass (classifier and
novelty autoencoder) captured for that shape on first use. Scoring a batch is then: copy the rows into the
pinned input, one asynchronous host-to-device copy, one graph replay, asynchronous copies of the outputs back
into pinned memory, an event. :meth:`CudaGraphsBackend.start` returns right after that, so the caller can
decode and preprocess the next rows while the GPU works; :meth:`Pending.wait` waits for the event.

A batch runs in the smallest bucket (:data:`~detector.core.backends.CUDA_BUCKETS`) that holds it, padded
(rows are scored independently, so padding changes nothing); a larger one is split. A slot is reused only
after its previous result was collected, so a batch in flight is never overwritten; a second batch of the same
bucket in flight gets a slot of its own.

If capturing a graph fails (a kernel that cannot be captured on this torch/driver), the backend says why in
:attr:`CudaGraphsBackend.graphs_disabled` and runs the same forward pass without graphs, still with pinned
buffers and asynchronous copies. The class also runs on the CPU, without graphs or pinned memory, so that
its bucketing and bookkeeping are tested on machines without a GPU.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from detector.core.backends import Backend, Outputs, Pending, Ready
from detector.core.model import ResCAE, ResCAEBiGRU

WARMUP_RUNS = 3  # eager runs on a side stream before capture (cuDNN/cuBLAS pick and allocate their workspaces)


class CudaGraphsBackend(Backend):
    """fp32 (or bf16 / fp16 classifier) forward passes replayed from CUDA graphs; see the module docstring."""

    def __init__(
        self,
        model: ResCAEBiGRU,
        autoencoder: ResCAE | None,
        device: torch.device,
        dtype: torch.dtype,
        buckets: Sequence[int],
        name: str,
    ) -> None:
        super().__init__(model, autoencoder, device)
        self.name = name
        self.dtype = dtype
        self.buckets = tuple(sorted(set(buckets)))
        self.on_gpu = device.type == "cuda"
        self.asynchronous = self.on_gpu
        self.classifier = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        if self.on_gpu:
            self.classifier.gru.flatten_parameters()  # one weight buffer for cuDNN, not a copy per call
        self.n_inputs = model.config.n_features
        self.graphs_disabled: str | None = None if self.on_gpu else "not on a GPU"
        self._free: dict[int, list[_Slot]] = {}
        self.slots_created = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What a graph holds: probabilities (float32) and reconstruction errors (float32) of a device batch."""
        probabilities = torch.softmax(self.classifier(x.to(self.dtype)).float(), dim=1)
        if self.autoencoder is None:
            return probabilities, None
        return probabilities, ((self.autoencoder(x) - x) ** 2).mean(dim=1)

    def start(self, matrix: np.ndarray) -> Pending:
        if not len(matrix):
            empty = None if self.autoencoder is None else np.zeros(0)
            return Ready((np.zeros((0, self.n_classes), dtype=np.float32), empty))
        largest = self.buckets[-1]
        parts = [self._launch(matrix[i : i + largest]) for i in range(0, len(matrix), largest)]
        return parts[0] if len(parts) == 1 else _Joined(parts)

    def bucket(self, rows: int) -> int:
        """The batch size a batch of ``rows`` (at most the largest bucket) is padded to."""
        return next(size for size in self.buckets if size >= rows)

    @torch.inference_mode()
    def _launch(self, rows: np.ndarray) -> Pending:
        slot = self._take(self.bucket(len(rows)))
        slot.host_in[: len(rows)].copy_(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
        slot.device_in.copy_(slot.host_in, non_blocking=True)
        if slot.graph is None and self.graphs_disabled is None:
            self._capture(slot)
        if slot.graph is not None and slot.device_out is not None:
            slot.graph.replay()
            probabilities, errors = slot.device_out
        else:
            probabilities, errors = self.forward(slot.device_in)
        slot.host_probabilities.copy_(probabilities, non_blocking=True)
        if errors is not None:
            slot.host_errors.copy_(errors, non_blocking=True)
        if slot.done is not None:
            slot.done.record()
        return _SlotPending(self, slot, len(rows))

    def _capture(self, slot: _Slot) -> None:
        """Capture the forward pass for this slot's buffers; on failure, note why and go on without graphs."""
        try:
            current = torch.cuda.current_stream(self.device)
            side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self.forward(slot.device_in)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                slot.device_out = self.forward(slot.device_in)
            slot.graph = graph
        except RuntimeError as exc:
            self.graphs_disabled = f"graph capture failed: {type(exc).__name__}: {str(exc)[:300]}"
            torch.cuda.synchronize(self.device)

    def _take(self, size: int) -> _Slot:
        free = self._free.setdefault(size, [])
        if free:
            return free.pop()
        self.slots_created += 1
        return _Slot(self, size)

    def release(self, slot: _Slot) -> None:
        self._free[slot.size].append(slot)


class _Slot:
    """Buffers (and, once captured, the graph) for one batch size; in use by at most one batch at a time."""

    def __init__(self, backend: CudaGraphsBackend, size: int) -> None:
        pin = backend.on_gpu
        self.size = size
        self.host_in = torch.zeros((size, backend.n_inputs), dtype=torch.float32, pin_memory=pin)
        self.device_in = torch.zeros((size, backend.n_inputs), dtype=torch.float32, device=backend.device)
        self.host_probabilities = torch.zeros((size, backend.n_classes), dtype=torch.float32, pin_memory=pin)
        self.host_errors = torch.zeros(size, dtype=torch.float32, pin_memory=pin)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.device_out: tuple[torch.Tensor, torch.Tensor | None] | None = None  # the graph's outputs
        self.done = torch.cuda.Event() if backend.on_gpu else None  # type: ignore[no-untyped-call]


class _SlotPending(Pending):
    def __init__(self, backend: CudaGraphsBackend, slot: _Slot, rows: int) -> None:
        self.backend, self.slot, self.rows = backend, slot, rows
        self.outputs: Outputs | None = None

    def wait(self) -> Outputs:
        if self.outputs is None:
            slot = self.slot
            if slot.done is not None:
                slot.done.synchronize()
            probabilities = slot.host_probabilities[: self.rows].numpy().copy()
            errors = None
            if self.backend.autoencoder is not None:
                errors = slot.host_errors[: self.rows].numpy().astype(np.float64)
            self.outputs = (probabilities, errors)
            self.backend.release(slot)
        return self.outputs


class _Joined(Pending):
    def __init__(self, parts: list[Pending]) -> None:
        self.parts = parts

    def wait(self) -> Outputs:
        outputs = [part.wait() for part in self.parts]
        probabilities = np.concatenate([p for p, _ in outputs])
        errors = None if outputs[0][1] is None else np.concatenate([e for _, e in outputs if e is not None])
        return probabilities, errors
