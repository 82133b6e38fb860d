"""Novelty: flows unlike the training data score above 1, flows like it rarely do; verdicts, alerts and the
``--emit flagged`` policy carry it; a bundle without a novelty model gives verdicts without it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from confluent_kafka import Message

from detector.core.bundle import load_bundle
from detector.core.decode import DecodedFlow, FlowDecoder
from detector.core.novelty import NoveltyCalibration, max_probability_signal
from detector.core.scorer import Scorer
from detector.stream.processor import BatchProcessor
from tests.support.bundles import NOVELTY_BUDGET, NOVELTY_QUANTILE, make_bundle
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


@pytest.fixture(scope="module")
def confidence_bundle(tmp_path_factory):
    path = make_bundle(tmp_path_factory.mktemp("bundle") / "b", novelty=True, novelty_flag="max_probability")
    return load_bundle(path)


def test_the_max_probability_signal_is_minus_log_of_the_largest_probability_even_where_it_rounds_to_one():
    moderate = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
    assert max_probability_signal(moderate) == pytest.approx(-np.log([0.5, 0.9]))
    confident = np.array([[1.0, 1e-9, 3e-9], [1.0, 1e-12, 0.0]], dtype=np.float32)
    values = max_probability_signal(confident)
    assert values == pytest.approx([4e-9, 1e-12], rel=1e-5), "float32 rounds the largest to 1; the rest still tell"
    assert max_probability_signal(np.zeros((0, 3))).shape == (0,)


def test_the_calibrated_signal_decides_and_every_signal_is_scored(confidence_bundle):
    calibration = confidence_bundle.novelty.calibration
    assert calibration.flag == "max_probability" and calibration.max_probability is not None
    scorer = Scorer(confidence_bundle, "cpu")
    flows = decoded(generated_rows(5)[:40] + unlike_training(generated_rows(7)[:40]))
    scores = scorer.scores(flows)
    assert set(scores.signals) == {"autoencoder", "max_probability"}
    assert scores.novelty.tolist() == scores.signals["max_probability"].tolist()
    verdicts = scorer.score(flows)
    for verdict, autoencoder, confidence in zip(
        verdicts, scores.signals["autoencoder"], scores.signals["max_probability"], strict=True
    ):
        assert verdict.novelty_signal == "max_probability"
        assert dict(verdict.novelty_scores) == pytest.approx(
            {"autoencoder": autoencoder, "max_probability": confidence}
        )
        assert verdict.is_novel == bool(confidence > 1)


def test_the_max_probability_threshold_flags_about_its_budget_of_benign_flows_like_the_calibration_rows(
    confidence_bundle,
):
    scorer = Scorer(confidence_bundle, "cpu")
    rows = [row for seed in (11, 12, 13) for row in generated_rows(seed) if row["Label"] == "BENIGN"]
    flagged = np.mean([v.is_novel for v in scorer.score(decoded(rows))])
    assert flagged < 4 * NOVELTY_BUDGET, "benign flows drawn like the calibration rows"


def test_alerts_name_the_deciding_signal_and_carry_both_scores(confidence_bundle):
    rows = generated_rows(5)[:30] + unlike_training(generated_rows(7)[:30])
    batch = processor(confidence_bundle, "all").process(messages(flow_values(rows)))
    alerts = [orjson.loads(out.value) for out in batch.outputs]
    for alert in alerts:
        assert schema_errors("alert.schema.json", alert) == []
        novelty = alert["novelty"]
        assert novelty["signal"] == "max_probability"
        assert set(novelty["scores"]) == {"autoencoder", "max_probability"}
        assert novelty["score"] == novelty["scores"]["max_probability"]
        assert novelty["is_novel"] is (novelty["score"] > 1)


def test_a_bundle_written_before_the_choice_is_decided_by_the_autoencoder():
    old = {"statistic": "x", "threshold": 0.5, "quantile": 0.99, "calibration_rows": 10}
    calibration = NoveltyCalibration.from_json(old)
    assert calibration.flag == "autoencoder" and calibration.max_probability is None
    assert calibration.expected_share == pytest.approx(0.01)
    assert NoveltyCalibration.from_json(calibration.to_json()) == calibration


def test_a_novelty_calibration_that_names_an_unusable_signal_is_refused():
    base = {"threshold": 0.5, "quantile": 0.99}
    with pytest.raises(ValueError, match="flag must be one of autoencoder, max_probability, got 'energy'"):
        NoveltyCalibration.from_json({**base, "flag": "energy"})
    with pytest.raises(ValueError, match="no max_probability threshold"):
        NoveltyCalibration.from_json({**base, "flag": "max_probability"})
    with pytest.raises(ValueError, match="max_probability: threshold must be a positive number"):
        NoveltyCalibration.from_json({**base, "max_probability": {"threshold": 0, "budget": 0.01}})


def test_each_alert_says_which_signal_raised_it_and_other_verdicts_say_nothing(novelty_bundle):
    rows = generated_rows(5)[:100] + unlike_training(generated_rows(7)[:30])
    every = [
        orjson.loads(out.value) for out in processor(novelty_bundle, "all").process(messages(flow_values(rows))).outputs
    ]
    by_id = {a["alert_id"]: a for a in every}
    flagged = processor(novelty_bundle, "flagged").process(messages(flow_values(rows))).outputs
    raised = {orjson.loads(out.value)["alert_id"]: orjson.loads(out.value)["raised_by"] for out in flagged}
    for alert_id, signals in raised.items():
        verdict = by_id[alert_id]
        expected = [
            name
            for name, hit in (("classifier", verdict["is_attack"]), ("novelty", verdict["novelty"]["is_novel"]))
            if hit
        ]
        assert signals == expected
    assert {tuple(s) for s in raised.values()} >= {("novelty",), ("classifier",)}, "the check needs both kinds"
    assert not any("raised_by" in a for a in every if a["alert_id"] not in raised and not a["is_attack"])
