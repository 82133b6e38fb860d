"""Creating topics on Apache Kafka, through every path that creates one: ``detector run --create-topics``,
``detector replay`` and the demo. Each topic carries exactly the configuration asked for and nothing else
(Apache Kafka refuses an unknown topic configuration, which the embedded broker ignores)."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

from detector.cli import main
from detector.stream.runner import build_worker
from detector.tools.demo import DEAD_LETTERS, FLOWS, VERDICTS, create_demo_topics
from tests.support.bundles import make_bundle
from tests.support.generated import generated_rows, write_generated_csv
from tests.support.kafka import client_config, client_config_from_env, unique_name
from tests.support.worker import worker_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]
WANTED = {"retention.ms": "3600000", "cleanup.policy": "delete", "max.message.bytes": "2000000"}


def described(bootstrap: str, topic: str) -> tuple[int, set[int], dict[str, str]]:
    """(partitions, replica counts, the topic's own configuration: what was set on it, not broker defaults)."""
    admin = AdminClient(client_config(bootstrap))
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    assert metadata.error is None, metadata.error
    replicas = {len(partition.replicas) for partition in metadata.partitions.values()}
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10)
    own = {
        name: entry.value for name, entry in entries.items() if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    }
    return len(metadata.partitions), replicas, own


def test_the_worker_creates_its_missing_topics_with_the_configuration_asked_for(apache_kafka_broker, tmp_path):
    bootstrap = apache_kafka_broker.bootstrap_servers
    names = {name: unique_name(name.removesuffix("_topic")) for name in ("input_topic", "output_topic", "dlq_topic")}
    settings = worker_settings(
        bootstrap,
        **names,
        group_id=unique_name("detector"),
        bundle=make_bundle(tmp_path / "bundle"),
        create_topics=True,
        partitions=2,
        replication_factor=1,
        topic_configs=WANTED,
    )
    build_worker(settings).discard()
    for topic in names.values():
        assert described(bootstrap, topic) == (2, {1}, WANTED), topic


def test_replay_creates_its_topic_with_the_configuration_asked_for(apache_kafka_broker, tmp_path):
    bootstrap = apache_kafka_broker.bootstrap_servers
    topic = unique_name("replay")
    csv = write_generated_csv(tmp_path / "flows.csv", generated_rows()[:20])
    argv = ["replay", str(csv), "--bootstrap-servers", bootstrap, "--topic", topic, "--partitions", "5"]
    argv += ["--replication-factor", "1"] + [f"--topic-config={key}={value}" for key, value in WANTED.items()]
    argv += [f"--kafka-option={key}={value}" for key, value in client_config_from_env().items()]
    assert main(argv) == 0
    assert described(bootstrap, topic) == (5, {1}, WANTED)


def test_replay_without_topic_settings_sends_no_topic_configuration(apache_kafka_broker, tmp_path):
    bootstrap = apache_kafka_broker.bootstrap_servers
    topic = unique_name("replay")
    csv = write_generated_csv(tmp_path / "flows.csv", generated_rows()[:5])
    assert main(["replay", str(csv), "--bootstrap-servers", bootstrap, "--topic", topic]) == 0
    assert described(bootstrap, topic) == (3, {1}, {}), "3 partitions, the broker's replication, its defaults"


def test_the_demo_creates_its_topics_with_the_brokers_defaults(apache_kafka_broker):
    bootstrap = apache_kafka_broker.bootstrap_servers
    create_demo_topics(bootstrap)  # idempotent: the session's broker may already have them
    assert [described(bootstrap, topic) for topic in (FLOWS, VERDICTS, DEAD_LETTERS)] == [
        (3, {1}, {}),
        (3, {1}, {}),
        (1, {1}, {}),
    ]


def test_a_topic_configuration_the_broker_does_not_know_is_one_line(apache_kafka_broker, tmp_path, capsys):
    bootstrap = apache_kafka_broker.bootstrap_servers
    csv = write_generated_csv(tmp_path / "flows.csv", generated_rows()[:5])
    topic = unique_name("replay")
    argv = ["replay", str(csv), "--bootstrap-servers", bootstrap, "--topic", topic, "--topic-config", "retention=1d"]
    assert main(argv) == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert f"cannot create topic {topic!r}" in line and "Unknown topic config name: retention" in line, line
