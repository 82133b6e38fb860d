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
        (["--emit", "novel"], "emit: Input should be 'attacks', 'flagged' or 'all'"),
        (["--kafka-option", "no-equals-sign"], "--kafka-option needs KEY=VALUE"),
        (["--kafka-option", "no.such.property=1"], "invalid Kafka client settings: No such configuration property"),
        (["--kafka-option", "enable.auto.commit=true"], "enable.auto.commit=true is not allowed"),
        (["--config", "/nonexistent/settings.toml"], "config file /nonexistent/settings.toml does not exist"),
        (["--metrics-port", "99999"], "metrics_port: Input should be less than or equal to 65535"),
    ],
)
def test_bad_settings_exit_2_with_one_line(argv, message, bundle_path, capsys):
    base = ["run", "--bundle", str(bundle_path), "--bootstrap-servers", "127.0.0.1:1", "--no-metrics"]
    assert main([*base, *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_run_settings_come_from_flags_then_environment_then_toml(bundle_path, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("detector.runner.run_worker", lambda settings: seen.append(settings) or 0)
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
    assert settings.metrics_enabled is False and settings.create_topics is True
