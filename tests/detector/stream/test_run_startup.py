"""``detector run`` start-up errors that need no broker: exit status 2 and one ``error:`` line, no traceback.

(A tampered bundle through a real process, and missing topics, are in test_worker_process.py.)
"""

from __future__ import annotations

import pytest

from detector.cli import main
from tests.support.bundles import make_bundle


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "v1", version="v1")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bundle", "/nonexistent/bundle"], "invalid settings: bundle: "),
        (["--max-batch", "0"], "max_batch: Input should be greater than or equal to 1"),
        (["--guarantee", "maybe"], "guarantee: Input should be 'exactly-once' or 'at-least-once'"),
        (["--emit", "loud"], "emit: Input should be 'attacks', 'flagged', 'novel' or 'all'"),
        (["--kafka-option", "no-equals-sign"], "--kafka-option number 1 is not KEY=VALUE"),
        (["--kafka-option", "bootstrap.servers=elsewhere:9092"], "set it with --bootstrap-servers"),
        (["--kafka-option", "group.id=other"], "set it with --group-id"),
        (["--kafka-option", "transactional.id=x"], "set it with --transactional-id"),
        (["--kafka-option", "no.such.property=1"], "invalid Kafka client settings: No such configuration property"),
        (["--kafka-option", "enable.auto.commit=true"], "enable.auto.commit=true is not allowed"),
        (["--config", "/nonexistent/settings.toml"], "config file /nonexistent/settings.toml does not exist"),
        (["--metrics-port", "99999"], "metrics_port: Input should be less than or equal to 65535"),
        (["--input-topic", "x", "--dlq-topic", "x"], "dlq_topic must differ from input_topic ('x')"),
        (["--input-topic", "x", "--output-topic", "x"], "output_topic must differ from input_topic ('x')"),
        (["--input-topic", ""], "input_topic: '' is not a Kafka topic name"),
        (["--output-topic", "alerts for bob"], "output_topic: 'alerts for bob' is not a Kafka topic name"),
        (["--group-id", ""], "group_id: must not be empty"),
        (["--log-level", "verbose"], "log_level: Input should be 'debug', 'info', 'warning' or 'error'"),
        (["--bootstrap-servers", ""], "bootstrap_servers: '' is not a comma-separated list of HOST:PORT"),
        (["--replication-factor", "0"], "replication_factor: must be -1 (the broker's default) or at least 1"),
        (["--partitions", "0"], "partitions: Input should be greater than or equal to 1"),
        (["--topic-config", "retention.ms"], "--topic-config number 1 is not KEY=VALUE"),
        (["--kafka-option", "group.instance.id=x"], "set it with --instance-id"),
        (["--instance-id", ""], "instance_id: must not be empty"),
        (["--session-timeout-ms", "6000", "--heartbeat-interval-ms", "3000"], "more than a third of the session"),
    ],
)
def test_bad_settings_exit_2_with_one_line(argv, message, bundle_path, capsys):
    base = ["run", "--bundle", str(bundle_path), "--bootstrap-servers", "127.0.0.1:1", "--no-metrics"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("detector run: error: ") and message in err[0], err


def test_a_kafka_table_in_the_environment_that_is_not_json_is_one_line_without_its_value(
    bundle_path, capsys, monkeypatch
):
    monkeypatch.setenv("FLOWWARDEN_KAFKA", "sasl.password=hunter2")
    assert main(["run", "--bundle", str(bundle_path), "--no-metrics"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FLOWWARDEN_KAFKA: cannot be parsed" in err[0], err
    assert "hunter2" not in err[0]


def test_run_settings_come_from_flags_then_environment_then_toml(bundle_path, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("detector.stream.runner.run_worker", lambda settings: seen.append(settings) or 0)
    config = tmp_path / "run.toml"
    config.write_text(
        'group_id = "from-toml"\nmax_delay_ms = 7\nemit = "all"\n[kafka]\n"sasl.username" = "toml-user"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("FLOWWARDEN_GROUP_ID", "from-env")
    monkeypatch.setenv("FLOWWARDEN_MAX_BATCH", "64")
    monkeypatch.setenv("FLOWWARDEN_KAFKA__SASL_MECHANISM", "PLAIN")
    argv = ["run", "--config", str(config), "--bundle", str(bundle_path), "--group-id", "from-flag"]
    argv += [
        "--kafka-option",
        "sasl.password=secret",
        "--no-metrics",
        "--create-topics",
        "--guarantee",
        "at-least-once",
    ]
    assert main(argv) == 0
    [settings] = seen
    assert (settings.group_id, settings.max_batch, settings.max_delay_ms) == ("from-flag", 64, 7)
    assert (settings.emit, settings.guarantee) == ("all", "at-least-once")
    assert settings.kafka == {"sasl.username": "toml-user", "sasl.mechanism": "PLAIN", "sasl.password": "secret"}
    assert settings.metrics is False and settings.create_topics is True


def test_a_malformed_kafka_option_never_echoes_its_text(bundle_path, capsys):
    argv = ["run", "--bundle", str(bundle_path), "--no-metrics", "--kafka-option", "sasl.password:Hunter2Secret"]
    assert main(argv) == 2
    assert "Hunter2Secret" not in capsys.readouterr().err


def test_an_unknown_key_in_the_settings_file_is_an_error_not_a_default(bundle_path, tmp_path, capsys):
    config = tmp_path / "typo.toml"
    config.write_text('input_topics = "mine"\n', encoding="utf-8")
    assert main(["run", "--config", str(config), "--bundle", str(bundle_path), "--no-metrics"]) == 2
    assert "unknown setting(s) 'input_topics'" in capsys.readouterr().err


def test_one_settings_file_serves_run_and_replay(bundle_path, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("detector.stream.runner.run_worker", lambda settings: seen.append(settings) or 0)
    config = tmp_path / "shared.toml"
    config.write_text('input_topic = "mine"\nrate = 100\n[kafka]\n"enable.ssl.certificate.verification" = false\n')
    assert main(["run", "--config", str(config), "--bundle", str(bundle_path), "--no-metrics"]) == 0
    [settings] = seen
    assert settings.input_topic == "mine"
    assert settings.kafka == {"enable.ssl.certificate.verification": "false"}  # librdkafka's spelling, not "False"


def test_a_switch_is_turned_off_by_its_no_flag_or_by_false_in_the_environment(bundle_path, monkeypatch):
    seen = []
    monkeypatch.setattr("detector.stream.runner.run_worker", lambda settings: seen.append(settings) or 0)
    assert main(["run", "--bundle", str(bundle_path), "--no-metrics"]) == 0
    monkeypatch.setenv("FLOWWARDEN_METRICS", "false")
    assert main(["run", "--bundle", str(bundle_path)]) == 0
    assert [settings.metrics for settings in seen] == [False, False]


def test_topic_creation_and_group_membership_settings_come_from_flags_environment_and_toml(
    bundle_path, tmp_path, monkeypatch
):
    seen = []
    monkeypatch.setattr("detector.stream.runner.run_worker", lambda settings: seen.append(settings) or 0)
    config = tmp_path / "run.toml"
    config.write_text(
        "partitions = 12\nreplication_factor = 3\nsession_timeout_ms = 30000\n[topic_configs]\n"
        '"retention.ms" = 86400000\n"cleanup.policy" = "delete"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("FLOWWARDEN_TOPIC_CONFIGS__CLEANUP_POLICY", "compact")
    monkeypatch.setenv("FLOWWARDEN_TOPIC_CONFIGS__MIN_INSYNC_REPLICAS", "2")
    monkeypatch.setenv("FLOWWARDEN_INSTANCE_ID", "detector-1")
    argv = ["run", "--config", str(config), "--bundle", str(bundle_path), "--no-metrics", "--partitions", "6"]
    argv += ["--topic-config", "retention.ms=3600000", "--heartbeat-interval-ms", "2000"]
    assert main(argv) == 0
    [settings] = seen
    assert (settings.partitions, settings.replication_factor) == (6, 3)
    expected = {"retention.ms": "3600000", "cleanup.policy": "compact", "min.insync.replicas": "2"}
    assert settings.topic_configs == expected
    assert (settings.instance_id, settings.session_timeout_ms, settings.heartbeat_interval_ms) == (
        "detector-1",
        30000,
        2000,
    )
