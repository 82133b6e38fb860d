"""The Apache Kafka fixture says why it cannot run, and the broker settings match the cluster's shape."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.support import apache_kafka


@pytest.fixture
def fresh(monkeypatch):
    """``distribution()`` computed again (it is cached per process) with what each test changes."""
    apache_kafka.distribution.cache_clear()
    yield monkeypatch
    apache_kafka.distribution.cache_clear()


def test_without_java_the_reason_says_so(fresh):
    fresh.setattr(apache_kafka, "_java", lambda: None)
    reason = apache_kafka.unavailable_reason()
    assert reason is not None and "Java >= 17" in reason and "no `java`" in reason


def test_an_old_java_is_named_with_its_version(fresh):
    fresh.setattr(apache_kafka, "_java", lambda: "/opt/java8/bin/java")
    fresh.setattr(apache_kafka, "_java_version", lambda java: "8.0.392")
    assert apache_kafka.unavailable_reason() == "Apache Kafka needs Java >= 17; /opt/java8/bin/java is Java 8.0.392"


def test_missing_jars_point_at_make_kafka(fresh, tmp_path):
    fresh.setattr(apache_kafka, "_java", lambda: "/usr/bin/java")
    fresh.setattr(apache_kafka, "_java_version", lambda java: "17.0.15")
    fresh.setattr(apache_kafka, "LIBS", apache_kafka.REPO / ".cache" / "no-such-folder")
    reason = apache_kafka.unavailable_reason()
    assert reason is not None and "no kafka_2.13 jar" in reason and "run `make kafka`" in reason


def test_the_version_is_read_from_the_broker_jar(fresh, tmp_path):
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka_2.13-9.9.1.jar").touch()
    (libs / "kafka-clients-9.9.1.jar").touch()
    fresh.setattr(apache_kafka, "_java", lambda: "/usr/bin/java")
    fresh.setattr(apache_kafka, "_java_version", lambda java: "21.0.2")
    fresh.setattr(apache_kafka, "LIBS", libs)
    found = apache_kafka.distribution()
    assert isinstance(found, apache_kafka.Distribution)
    assert (found.version, found.description, found.java_version) == ("9.9.1", "Apache Kafka 9.9.1", "21.0.2")


def test_java_versions_are_parsed_old_style_and_new():
    assert apache_kafka.parse_java_version('openjdk version "17.0.15" 2025-04-15') == "17.0.15"
    assert apache_kafka.parse_java_version('java version "1.8.0_392"') == "8.0"
    assert apache_kafka.parse_java_version("no version here") is None


@pytest.mark.parametrize(("size", "replicas", "in_sync"), [(1, "1", "1"), (3, "3", "2")])
def test_every_topic_of_a_cluster_has_as_many_replicas_as_it_can_and_a_quorum_in_sync(size, replicas, in_sync):
    settings = apache_kafka.broker_defaults(size)
    for key in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert settings[key] == replicas
    assert settings["transaction.state.log.replication.factor"] == replicas
    assert settings["min.insync.replicas"] == settings["transaction.state.log.min.isr"] == in_sync


def test_cluster_ids_never_look_like_an_option():
    assert not any(apache_kafka._cluster_id().startswith("-") for _ in range(2000))


def test_an_extra_listener_is_advertised_with_its_own_protocol_and_the_brokers_keep_plaintext(tmp_path):
    cluster = SimpleNamespace(directory=tmp_path)
    node = apache_kafka.KafkaNode(cluster, 1)  # type: ignore[arg-type]  # write_config needs only the folder
    node.pick_ports(proxied=False, extra_listeners=["SECURE"])
    node.write_config("1@127.0.0.1:1", {"sasl.enabled.mechanisms": "SCRAM-SHA-512"}, None, {"SECURE": "SASL_SSL"})
    lines = node.config_path.read_text().splitlines()
    config = dict(line.split("=", 1) for line in lines)

    secure = f"SECURE://{node.address('SECURE')}"
    assert secure in config["listeners"].split(",") and secure in config["advertised.listeners"].split(",")
    protocols = dict(entry.split(":") for entry in config["listener.security.protocol.map"].split(","))
    assert protocols == {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", "SECURE": "SASL_SSL"}
    assert config["inter.broker.listener.name"] == "PLAINTEXT"
    assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert len({node.client_port, node.controller_port, node.extra_ports["SECURE"]}) == 3
