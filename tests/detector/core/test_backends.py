"""Serving backends: each scores like the fp32 model it is derived from, ``auto`` picks per device, a backend that
cannot run on a device is refused with a clear message, and the GPU backend's bucketing and buffer reuse (run
here on the CPU, without graphs) never mixes up rows or batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.core.backends import BACKENDS, CPU_BACKENDS, CUDA_BACKENDS, build_backend, choose
from detector.core.bundle import load_bundle
from detector.core.cudagraphs import CudaGraphsBackend
from detector.core.scorer import DeviceError, Scorer
from detector.stream.settings import RunSettings
from tests.support.bundles import decoded_generated_flows, make_bundle
from tests.support.generated import FEATURES, generated_rows, unlike_training

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("bundle") / "b", novelty=True))


@pytest.fixture(scope="module")
def flows():
    from detector.core.decode import FlowDecoder

    decoder = FlowDecoder(FEATURES)
    unlike = [decoder.decode_mapping(row) for row in unlike_training(generated_rows(4))]
    return decoded_generated_flows(0) + decoded_generated_flows(1) + unlike


def test_the_eager_backend_is_the_fp32_model_exactly(bundle, flows):
    scores = Scorer(bundle, "cpu", backend="eager").scores(flows)
    matrix = Scorer(bundle, "cpu")._matrix(flows)
    with torch.inference_mode():
        expected = torch.softmax(bundle.model(torch.from_numpy(matrix)), dim=1).numpy()
    np.testing.assert_array_equal(scores.probabilities, expected)
    np.testing.assert_array_equal(scores.novelty, bundle.novelty.scores(matrix, CPU))


def test_int8_gives_the_fp32_models_labels_and_the_same_novelty(bundle, flows):
    reference = Scorer(bundle, "cpu", backend="eager").scores(flows)
    int8 = Scorer(bundle, "cpu", backend="int8")
    assert int8.backend.name == "int8"
    scores = int8.scores(flows)
    assert np.mean(scores.ranked(1)[:, 0] == reference.ranked(1)[:, 0]) >= 0.99
    assert np.abs(scores.probabilities - reference.probabilities).max() < 0.05
    assert not np.array_equal(scores.probabilities, reference.probabilities), "int8 must not be the fp32 model"
    np.testing.assert_array_equal(scores.novelty, reference.novelty)  # the novelty model stays fp32
    assert scores.novel().any() and not scores.novel().all()


def test_a_flows_int8_scores_do_not_depend_on_the_batch_it_is_scored_in(bundle, flows):
    scorer = Scorer(bundle, "cpu", backend="int8")
    together = scorer.scores(flows).ranked(1)[:, 0]
    alone = np.concatenate([scorer.scores([flow]).ranked(1)[:, 0] for flow in flows[:60]])
    assert (alone == together[:60]).all()


def test_auto_is_int8_on_a_cpu_and_cuda_graphs_on_a_gpu():
    assert choose("auto", CPU) == "int8"
    assert choose("auto", torch.device("cuda")) == "cuda-graphs"
    assert Scorer.__init__.__defaults__[-1] == "auto"


@pytest.mark.parametrize("name", ["cuda-graphs", "cuda-graphs-bf16", "cuda-graphs-fp16"])
def test_a_gpu_backend_on_the_cpu_is_a_device_error_naming_the_choices(bundle, name):
    with pytest.raises(DeviceError, match=f"backend {name} does not run on cpu: choose one of auto, eager, int8"):
        Scorer(bundle, "cpu", backend=name)


def test_an_unknown_backend_is_a_device_error(bundle):
    with pytest.raises(DeviceError, match="unknown backend 'onnx'"):
        Scorer(bundle, "cpu", backend="onnx")


def test_the_run_settings_offer_exactly_the_backends_there_are():
    annotation = RunSettings.model_fields["backend"].annotation
    assert tuple(annotation.__args__) == BACKENDS
    assert set(BACKENDS) == {"auto", *CPU_BACKENDS, *CUDA_BACKENDS}


def test_the_gpu_backends_bucketing_pads_splits_and_reuses_buffers_without_mixing_batches(bundle, flows):
    """On the CPU the class runs without graphs or pinned memory; its bookkeeping is the same."""
    scorer = Scorer(bundle, "cpu", backend="eager")
    matrix = scorer._matrix(flows)
    expected_probabilities, expected_errors = scorer.backend.run(matrix)
    model, autoencoder = bundle.model, bundle.novelty.autoencoder
    backend = CudaGraphsBackend(model, autoencoder, CPU, torch.float32, (4, 16, 64), "cuda-graphs")
    assert backend.graphs_disabled == "not on a GPU" and not backend.asynchronous
    assert [backend.bucket(n) for n in (1, 4, 5, 16, 17, 64)] == [4, 4, 16, 16, 64, 64]

    first = backend.start(matrix[:5])  # padded to 16
    second = backend.start(matrix[5:10])  # the 16-bucket is in use: a second slot
    large = backend.start(matrix)  # more rows than the largest bucket: split into parts
    assert backend.slots_created >= 3
    for pending, rows in ((second, slice(5, 10)), (first, slice(0, 5)), (large, slice(None))):
        probabilities, errors = pending.wait()
        np.testing.assert_allclose(probabilities, expected_probabilities[rows], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(errors, expected_errors[rows], rtol=1e-5, atol=1e-9)
    created = backend.slots_created
    backend.start(matrix[:7]).wait()
    assert backend.slots_created == created, "a collected slot is reused"
    empty_probabilities, empty_errors = backend.start(matrix[:0]).wait()
    assert empty_probabilities.shape == (0, len(bundle.classes)) and empty_errors.shape == (0,)


def test_a_reduced_precision_gpu_backend_keeps_the_novelty_model_in_fp32(bundle, flows):
    matrix = Scorer(bundle, "cpu")._matrix(flows)
    backend = build_backend("eager", bundle.model, bundle.novelty.autoencoder, CPU)
    _, reference_errors = backend.run(matrix)
    half = CudaGraphsBackend(bundle.model, bundle.novelty.autoencoder, CPU, torch.bfloat16, (512,), "cuda-graphs-bf16")
    assert half.classifier is not bundle.model and next(half.classifier.parameters()).dtype == torch.bfloat16
    assert next(bundle.model.parameters()).dtype == torch.float32, "the bundle's model is left as it is"
    probabilities, errors = half.start(matrix).wait()
    np.testing.assert_allclose(errors, reference_errors, rtol=1e-5, atol=1e-9)
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(1), 1, atol=1e-3)


def test_auto_serves_the_fp32_model_on_a_cpu_without_x86_int8_kernels(monkeypatch):
    import detector.core.backends as backends

    monkeypatch.setattr(backends, "_fbgemm", lambda: False)  # torch's engine list cannot be patched
    assert choose("auto", CPU) == "eager"
    assert choose("auto", torch.device("cuda")) == "cuda-graphs"
