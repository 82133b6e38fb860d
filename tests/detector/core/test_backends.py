"""Serving backends: each scores like the fp32 model it is derived from, ``auto`` picks per device, a backend that
cannot run on a device is refused with a clear message, and the GPU backend's bucketing and buffer reuse (run
here on the CPU, without graphs) never mixes up rows or batches."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import detector.core.backends as backends
from detector.core.backends import BACKENDS, CPU_BACKENDS, CUDA_BACKENDS, build_backend, choose, resolve
from detector.core.bundle import load_bundle
from detector.core.cudagraphs import CudaGraphsBackend
from detector.core.scorer import DeviceError, Scorer, Scores
from detector.stream.settings import RunSettings
from tests.support.bundles import decoded_generated_flows, make_bundle
from tests.support.generated import FEATURES, generated_rows, unlike_training

CPU = torch.device("cpu")
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino extra")


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
    np.testing.assert_array_equal(scores.novelty, bundle.novelty.scores(matrix, expected, CPU))


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


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend this CPU has (or has not) OpenVINO, native bfloat16 and fbgemm: auto's choice must not depend on
    the machine the tests run on."""

    def pretend(openvino: bool, bf16: bool = True, fbgemm: bool = True) -> None:
        monkeypatch.setattr(backends, "_openvino_installed", lambda: openvino)
        monkeypatch.setattr(backends, "_bf16", lambda: bf16)
        monkeypatch.setattr(backends, "_fbgemm", lambda: fbgemm)  # torch's engine list cannot be patched

    return pretend


def test_auto_is_openvino_bf16_on_a_cpu_with_bfloat16_and_cuda_graphs_on_a_gpu(cpu_with):
    cpu_with(openvino=True, bf16=True)
    assert resolve("auto", CPU) == ("openvino-bf16", "")
    assert choose("auto", torch.device("cuda")) == "cuda-graphs"
    assert Scorer.__init__.__defaults__[-1] == "auto"


def test_auto_serves_openvino_fp32_on_a_cpu_without_bfloat16_and_says_why(cpu_with):
    cpu_with(openvino=True, bf16=False)
    name, note = resolve("auto", CPU)
    assert name == "openvino" and "no native bfloat16" in note


def test_auto_without_openvino_falls_back_to_int8_and_says_why(cpu_with, bundle):
    cpu_with(openvino=False)
    name, note = resolve("auto", CPU)
    assert name == "int8" and "OpenVINO is not installed" in note and "int8" in note
    scorer = Scorer(bundle, "cpu")
    assert scorer.backend.name == "int8" and scorer.backend.note == note
    assert Scorer(bundle, "cpu", backend="int8").backend.note == "", "a named backend needs no explanation"


def test_a_named_openvino_backend_without_openvino_is_a_device_error_naming_the_extra(cpu_with, bundle):
    cpu_with(openvino=False)
    with pytest.raises(DeviceError, match="openvino-bf16 needs OpenVINO, which is not installed"):
        Scorer(bundle, "cpu", backend="openvino-bf16")


@pytest.mark.parametrize("name", ["cuda-graphs", "cuda-graphs-bf16", "cuda-graphs-fp16"])
def test_a_gpu_backend_on_the_cpu_is_a_device_error_naming_the_choices(bundle, name):
    message = f"backend {name} does not run on cpu: choose one of auto, eager, int8, openvino, openvino-bf16"
    with pytest.raises(DeviceError, match=message):
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


def test_auto_serves_the_fp32_model_on_a_cpu_without_openvino_or_x86_int8_kernels(cpu_with):
    cpu_with(openvino=False, fbgemm=False)
    assert choose("auto", CPU) == "eager"
    assert choose("auto", torch.device("cuda")) == "cuda-graphs"


@needs_openvino
@pytest.mark.parametrize("rows", [1, 7, 300])
def test_openvino_fp32_is_the_fp32_model_to_rounding(bundle, flows, rows):
    """Gate order, biases, the hidden states' layout per layer and direction and the folded BatchNorm are all in
    the graph: any of them wrong moves the probabilities far more than fp32 rounding does."""
    reference = Scorer(bundle, "cpu", backend="eager")
    scorer = Scorer(bundle, "cpu", backend="openvino")
    assert scorer.backend.name == "openvino"
    chosen = flows[:rows]
    expected, scores = reference.scores(chosen), scorer.scores(chosen)
    np.testing.assert_allclose(scores.probabilities, expected.probabilities, rtol=0, atol=1e-5)
    assert (scores.ranked(1) == expected.ranked(1)).all()
    # A small reconstruction error is a mean of small squared differences: fp32 rounding of the reconstruction
    # (about 3e-7, the same as the classifier's) moves it by up to about 1e-4 of itself.
    np.testing.assert_allclose(scores.novelty, expected.novelty, rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(scores.novel(), expected.novel())
    assert scores.probabilities.dtype == np.float32 and scores.novelty.dtype == np.float64


@needs_openvino
def test_openvino_bf16_gives_the_fp32_models_labels_and_the_same_novelty_flags(bundle, flows):
    reference = Scorer(bundle, "cpu", backend="eager").scores(flows)
    fp32 = Scorer(bundle, "cpu", backend="openvino").scores(flows)
    scorer = Scorer(bundle, "cpu", backend="openvino-bf16")
    assert scorer.backend.name == "openvino-bf16"
    scores = scorer.scores(flows)
    assert np.mean(scores.ranked(1)[:, 0] == reference.ranked(1)[:, 0]) >= 0.99
    assert np.abs(scores.probabilities - reference.probabilities).max() < 0.05
    if importlib.util.find_spec("openvino") and backends._bf16():  # without native bf16 OpenVINO runs fp32
        assert not np.allclose(scores.probabilities, fp32.probabilities, atol=1e-5), "bf16 must not be fp32"
    np.testing.assert_array_equal(scores.novelty, fp32.novelty)  # the autoencoder stays fp32
    np.testing.assert_array_equal(scores.novel(), reference.novel())
    assert scores.novel().any() and not scores.novel().all()


@needs_openvino
@pytest.mark.parametrize("name", ["openvino", "openvino-bf16"])
def test_an_openvino_scorers_results_do_not_depend_on_the_batch_or_its_split_into_streams(bundle, flows, name):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two inference streams, each scoring part of a batch
    try:
        scorer = Scorer(bundle, "cpu", backend=name)
    finally:
        torch.set_num_threads(threads)
    assert len(flows) >= 256, "enough flows for two streams"
    together = scorer.scores(flows)
    alone = Scores.joined([scorer.scores([flow]) for flow in flows[:40]])
    shifted = scorer.scores(flows[3:])
    np.testing.assert_allclose(alone.probabilities, together.probabilities[:40], rtol=0, atol=1e-6)
    np.testing.assert_allclose(shifted.probabilities, together.probabilities[3:], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(shifted.novel(), together.novel()[3:])
    empty = scorer.scores([])
    assert empty.probabilities.shape == (0, len(bundle.classes)) and empty.novelty.shape == (0,)


@needs_openvino
def test_a_large_matrix_is_scored_in_bounded_parts_in_order(bundle, flows, monkeypatch):
    from detector.core import openvino_cpu

    monkeypatch.setattr(openvino_cpu, "INFERENCE_BATCH", 50)
    scorer = Scorer(bundle, "cpu", backend="openvino")
    reference = Scorer(bundle, "cpu", backend="eager").scores(flows)
    np.testing.assert_allclose(scorer.scores(flows).probabilities, reference.probabilities, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("rows", "streams", "parts"),
    [
        (1, 2, [(0, 1)]),
        (255, 2, [(0, 255)]),  # too few rows to share
        (512, 2, [(0, 256), (256, 512)]),
        (512, 4, [(0, 128), (128, 256), (256, 384), (384, 512)]),
        (10_000, 2, [(0, 3333), (3333, 6666), (6666, 10_000)]),  # none over INFERENCE_BATCH (4,096)
    ],
)
def test_a_batch_splits_into_contiguous_parts_one_per_stream(rows, streams, parts):
    pytest.importorskip("openvino")
    from detector.core.openvino_cpu import _split

    assert _split(rows, streams) == parts
