"""Why this alert: integrated-gradients attributions name the feature that decides a verdict, per flow, batched."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch

from detector.core.explain import Explainer
from detector.core.model import ModelConfig, ResCAEBiGRU
from detector.core.preprocess import Preprocessor

NUMERIC = ("Flow Duration", "Total Fwd Packet", "Flow Bytes/s", "Flow IAT Mean", "SYN Flag Count", "Dst Port")
PROTOCOLS = ("tcp", "udp", "icmp")
CLASSES = ("BENIGN", "Slow", "Ping")  # Slow: Flow Duration alone decides it; Ping: proto == icmp alone
CPU = torch.device("cpu")


def constructed_rows(n: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Rows whose class is decided by one feature each; every other feature is noise shared by all classes."""
    rng = np.random.default_rng(seed)
    numeric = rng.uniform(0, 1000, size=(n, len(NUMERIC)))
    labels = rng.integers(0, len(CLASSES), size=n)
    numeric[:, 0] = np.where(labels == 1, rng.uniform(800, 1000, n), rng.uniform(0, 300, n))
    proto = [("icmp" if label == 2 else str(rng.choice(["tcp", "udp"]))) for label in labels]
    return numeric, proto, labels


@cache
def constructed() -> tuple[Explainer, Preprocessor]:
    """A small classifier fitted (full batch, seeded, a few seconds) to rows where one feature decides each class."""
    numeric, proto, labels = constructed_rows(300, seed=1)
    preprocessor = Preprocessor.fit(numeric, NUMERIC, {"proto": proto})
    inputs = torch.as_tensor(preprocessor.transform(numeric, {"proto": proto}))
    torch.manual_seed(0)
    model = ResCAEBiGRU(ModelConfig(n_features=preprocessor.width, n_classes=3, filters=(8, 16), gru_hidden=16))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with torch.enable_grad():
        for _ in range(60):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), torch.as_tensor(labels)).backward()
            optimizer.step()
    return Explainer(model.eval(), preprocessor, CPU), preprocessor


def test_the_deciding_feature_comes_first_and_a_categorical_feature_keeps_its_own_name() -> None:
    explainer, preprocessor = constructed()
    numeric, proto, labels = constructed_rows(200, seed=2)
    matrix = preprocessor.transform(numeric, {"proto": proto})
    predicted = explainer.model(torch.as_tensor(matrix)).argmax(dim=1).numpy()
    assert (predicted == labels).mean() > 0.95  # the model learnt the rule: otherwise the test would mean nothing
    right = predicted == labels
    raw = [[*row.tolist(), p] for row, p in zip(numeric, proto, strict=True)]
    explained = explainer.explain(matrix, predicted, raw, k=3)
    for label, feature in ((1, "Flow Duration"), (2, "proto")):
        rows = np.flatnonzero(right & (labels == label))
        assert len(rows) > 20
        top = [explained[i][0].feature for i in rows]
        assert top.count(feature) / len(top) > 0.9, (CLASSES[label], top)
    ping = int(np.flatnonzero(right & (labels == 2))[0])
    entry = next(a for a in explained[ping] if a.feature == "proto")
    assert entry.value == "icmp" and entry.attribution > 0


def test_one_entry_per_requested_feature_with_real_names_and_raw_values() -> None:
    explainer, preprocessor = constructed()
    numeric, proto, _ = constructed_rows(30, seed=3)
    numeric[0, 2] = np.nan
    matrix = preprocessor.transform(numeric, {"proto": proto})
    raw = [[*row.tolist(), p] for row, p in zip(numeric, proto, strict=True)]
    features = (*NUMERIC, "proto")
    for k in (1, 4, 7, 50):
        explained = explainer.explain(matrix, np.ones(30, dtype=np.int64), raw, k)
        assert [len(e) for e in explained] == [min(k, len(features))] * 30
        for row, entries in zip(raw, explained, strict=True):
            assert len({a.feature for a in entries}) == len(entries)
            for a in entries:
                value = row[features.index(a.feature)]
                assert a.value == (None if isinstance(value, float) and np.isnan(value) else value)
            attributions = [a.attribution for a in entries]
            assert attributions == sorted(attributions, reverse=True)
    assert explainer.explain(matrix, np.ones(30, dtype=np.int64), raw, 0) == [()] * 30


def test_one_hot_columns_are_summed_into_their_feature() -> None:
    explainer, preprocessor = constructed()
    numeric, proto, _ = constructed_rows(40, seed=4)
    matrix = preprocessor.transform(numeric, {"proto": proto})
    targets = np.full(40, 2)
    folded = explainer.attributions(matrix, targets)
    per_input = explainer._per_input(matrix, targets)
    assert folded.shape == (40, len(NUMERIC) + 1)
    np.testing.assert_allclose(folded[:, : len(NUMERIC)], per_input[:, : len(NUMERIC)], rtol=1e-6)
    np.testing.assert_allclose(folded[:, -1], per_input[:, len(NUMERIC) :].sum(axis=1), rtol=1e-5, atol=1e-7)


def test_a_batch_gives_each_row_the_attributions_it_gets_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    explainer, preprocessor = constructed()
    numeric, proto, labels = constructed_rows(50, seed=5)
    matrix = preprocessor.transform(numeric, {"proto": proto})
    together = explainer.attributions(matrix, labels)
    alone = np.concatenate([explainer.attributions(matrix[i : i + 1], labels[i : i + 1]) for i in range(50)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)
    monkeypatch.setattr("detector.core.explain.EXPLAIN_BATCH", 7)  # chunked backward passes: the same numbers
    np.testing.assert_allclose(explainer.attributions(matrix, labels), together, rtol=1e-4, atol=1e-6)
    assert np.abs(together).max() > 0


def test_attributions_are_towards_the_class_asked_for() -> None:
    """The same flow explained towards two classes gets different signs on the deciding feature."""
    explainer, preprocessor = constructed()
    numeric, proto, labels = constructed_rows(200, seed=6)
    slow = np.flatnonzero(labels == 1)[:20]
    matrix = preprocessor.transform(numeric[slow], {"proto": [proto[i] for i in slow]})
    towards_slow = explainer.attributions(matrix, np.full(len(slow), 1))[:, 0]
    towards_benign = explainer.attributions(matrix, np.full(len(slow), 0))[:, 0]
    assert (towards_slow > 0).mean() > 0.9 and (towards_benign < 0).mean() > 0.9
