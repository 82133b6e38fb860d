"""librdkafka settings of the worker: defaults, pass-through, and what each guarantee requires."""

from __future__ import annotations

import pytest

from detector.stream.clients import consumer_config, default_transactional_id, producer_config, transactional_id
from detector.stream.settings import RunSettings, SettingsError


def settings(**values) -> RunSettings:
    return RunSettings(bootstrap_servers="b:9092", group_id="g", **values)


def test_exactly_once_reads_committed_and_commits_manually():
    config = consumer_config(settings(guarantee="exactly-once"))
    assert config["isolation.level"] == "read_committed"
    assert config["enable.auto.commit"] == "false" and config["enable.auto.offset.store"] == "false"
    assert config["group.id"] == "g" and config["bootstrap.servers"] == "b:9092"
    assert int(config["queued.max.messages.kbytes"]) <= 64 * 1024, "prefetch must be capped"


def test_the_producer_is_idempotent_with_acks_all_and_transactional_only_for_exactly_once():
    eos = producer_config(settings(), "tx-1")
    alo = producer_config(settings(guarantee="at-least-once"), None)
    for config in (eos, alo):
        assert config["acks"] == "all" and config["enable.idempotence"] == "true"
    assert eos["transactional.id"] == "tx-1" and "transactional.id" not in alo


def test_pass_through_settings_reach_the_right_client():
    kafka = {"sasl.username": "u", "session.timeout.ms": "6000", "linger.ms": "20", "statistics.interval.ms": "1000"}
    s = settings(kafka=kafka)
    consumer, producer = consumer_config(s), producer_config(s, None)
    assert consumer["sasl.username"] == producer["sasl.username"] == "u"
    assert consumer["session.timeout.ms"] == "6000" and "session.timeout.ms" not in producer
    assert producer["linger.ms"] == "20" and "linger.ms" not in consumer
    assert consumer["statistics.interval.ms"] == "1000" and "statistics.interval.ms" not in producer


@pytest.mark.parametrize(
    ("kafka", "guarantee", "message"),
    [
        ({"enable.auto.commit": "true"}, "at-least-once", "enable.auto.commit"),
        ({"isolation.level": "read_uncommitted"}, "exactly-once", "isolation.level"),
        ({"acks": "1"}, "at-least-once", "acks"),
        ({"enable.idempotence": "false"}, "at-least-once", "enable.idempotence"),
    ],
)
def test_settings_that_break_the_guarantee_are_refused(kafka, guarantee, message):
    s = settings(kafka=kafka, guarantee=guarantee)
    with pytest.raises(SettingsError, match=message):
        consumer_config(s)
        producer_config(s, "tx")


def test_default_transactional_ids_are_unique_per_worker():
    assert default_transactional_id("g") != default_transactional_id("g")
    assert default_transactional_id("g").startswith("g-")


def test_a_worker_slot_names_the_static_member_and_the_transactional_id():
    pod = consumer_config(settings(transactional_id="detector-0"))
    assert pod["group.instance.id"] == "detector-0", "the transactional id of a slot is its member id too"
    assert transactional_id(settings(transactional_id="detector-0")) == "detector-0"
    named = settings(instance_id="slot-1", transactional_id="tx-9")
    assert consumer_config(named)["group.instance.id"] == "slot-1"
    assert transactional_id(named) == "tx-9"
    derived = settings(instance_id="slot-1")
    assert transactional_id(derived) == "g-slot-1", "transactional ids are cluster-wide: the group is part of it"
    assert "group.instance.id" not in consumer_config(settings()), "no slot: dynamic membership"


def test_members_rebalance_incrementally_unless_the_consumer_protocol_is_chosen():
    assert consumer_config(settings())["partition.assignment.strategy"] == "cooperative-sticky"
    chosen = consumer_config(settings(kafka={"partition.assignment.strategy": "range"}))
    assert chosen["partition.assignment.strategy"] == "range", "a user's choice wins"
    kip848 = consumer_config(settings(kafka={"group.protocol": "consumer"}))
    assert "partition.assignment.strategy" not in kip848, "the consumer protocol assigns on the broker"


def test_group_timeouts_come_from_their_own_settings_or_the_pass_through_never_both():
    config = consumer_config(settings(session_timeout_ms=10_000, heartbeat_interval_ms=1_000))
    assert (config["session.timeout.ms"], config["heartbeat.interval.ms"]) == ("10000", "1000")
    assert consumer_config(settings(kafka={"session.timeout.ms": "6000"}))["session.timeout.ms"] == "6000"
    with pytest.raises(ValueError, match=r"session\.timeout\.ms is given twice"):
        settings(session_timeout_ms=10_000, kafka={"session.timeout.ms": "6000"})
    with pytest.raises(ValueError, match="more than a third of the session timeout"):
        settings(session_timeout_ms=6_000, heartbeat_interval_ms=3_000)
