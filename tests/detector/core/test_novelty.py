"""Novelty: flows unlike the training data score above 1, flows like it rarely do; verdicts, alerts and the
``--emit flagged`` policy carry it; a bundle without a novelty model gives verdicts without it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from confluent_kafka import Message

from detector.core.bundle import load_bundle
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.scorer import Scorer
from detector.stream.processor import BatchProcessor
from tests.support.bundles import NOVELTY_QUANTILE, make_bundle
from tests.support.generated import FEATURES, generated_rows, unlike_training
from tests.support.worker import flow_values, schema_errors


@pytest.fixture(scope="module")
def novelty_bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("bundle") / "b", novelty=True))


@pytest.fixture(scope="module")
def plain_bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("bundle") / "b"))


def decoded(rows) -> list[DecodedFlow]:
    decoder = FlowDecoder(FEATURES)
    return [decoder.decode_mapping(row) for row in rows]


def test_flows_like_the_training_data_are_rarely_novel_and_flows_unlike_it_mostly_are(novelty_bundle):
    scorer = Scorer(novelty_bundle, "cpu")
    like = scorer.scores(decoded(generated_rows(5) + generated_rows(6))).novelty
    unlike = scorer.scores(decoded(unlike_training(generated_rows(7)))).novelty
    assert like is not None and unlike is not None
    expected = 1 - NOVELTY_QUANTILE  # by calibration, on flows drawn like the calibration rows
    assert np.mean(like > 1) < 3 * expected
    assert np.mean(unlike > 1) > 0.9
    assert np.median(unlike) > 10 * np.median(like)


def test_verdicts_carry_the_novelty_scores(novelty_bundle):
    scorer = Scorer(novelty_bundle, "cpu")
    flows = decoded(generated_rows(5)[:20] + unlike_training(generated_rows(7)[:20]))
    scores = scorer.scores(flows)
    verdicts = scorer.score(flows)
    assert [v.novelty for v in verdicts] == pytest.approx(scores.novelty.tolist())
    assert [v.is_novel for v in verdicts] == (scores.novelty > 1).tolist()


def test_a_bundle_without_a_novelty_model_gives_verdicts_and_alerts_without_novelty(plain_bundle):
    assert plain_bundle.novelty is None
    batch = processor(plain_bundle, "all").process(messages(flow_values(generated_rows(5)[:10])))
    alerts = [orjson.loads(out.value) for out in batch.outputs]
    assert len(alerts) == 10 and all("novelty" not in alert for alert in alerts)
    assert not batch.novel


def test_alerts_carry_a_schema_valid_novelty_object(novelty_bundle):
    rows = generated_rows(5)[:30] + unlike_training(generated_rows(7)[:30])
    batch = processor(novelty_bundle, "all").process(messages(flow_values(rows)))
    alerts = [orjson.loads(out.value) for out in batch.outputs]
    for alert in alerts:
        assert schema_errors("alert.schema.json", alert) == []
        assert alert["novelty"]["is_novel"] is (alert["novelty"]["score"] > 1)
    novel = [a["novelty"]["is_novel"] for a in alerts]
    assert sum(novel[30:]) > 25 and sum(novel[:30]) < 5
    assert sum(batch.novel.values()) == sum(novel)


def test_emit_flagged_adds_novel_flows_to_the_attacks(novelty_bundle):
    rows = generated_rows(5)[:100] + unlike_training(generated_rows(7)[:30])
    every = [
        orjson.loads(out.value) for out in processor(novelty_bundle, "all").process(messages(flow_values(rows))).outputs
    ]
    attacks = {a["alert_id"] for a in every if a["is_attack"]}
    novel = {a["alert_id"] for a in every if a["novelty"]["is_novel"]}
    assert novel - attacks, "the check needs novel flows the classifier calls benign"

    def emitted(emit: str) -> set[str]:
        batch = processor(novelty_bundle, emit).process(messages(flow_values(rows)))
        return {orjson.loads(out.value)["alert_id"] for out in batch.outputs}

    assert emitted("attacks") == attacks
    assert emitted("flagged") == attacks | novel


def processor(bundle, emit):
    return BatchProcessor(bundle, output_topic="alerts", dlq_topic="dlq", emit=emit, device="cpu")


def messages(values):
    return [Message(topic="flows", partition=0, offset=i, value=value) for i, value in enumerate(values)]
