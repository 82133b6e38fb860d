"""``detector check``: one line per check, each failure on its own line, exit 0 / 1 / 2."""

from __future__ import annotations

import socket

import pytest
import torch

from detector.cli import main
from tests.support.bundles import make_bundle
from tests.support.kafka import EMBEDDED, client_config_from_env, unique_name

UNREACHABLE = ["--bootstrap-servers", "127.0.0.1:1", "--check-timeout", "2"]  # nothing listens on port 1


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("check") / "b", version="c1")


def check(capsys, argv: list[str]) -> tuple[int, dict[str, tuple[str, str]]]:
    """Exit status and the report, check name -> (status, detail)."""
    status = main(["check", *argv])
    lines = capsys.readouterr().out.splitlines()
    report = {line[6:19].strip(): (line[:5].strip(), line[20:]) for line in lines[:-1]}  # Check.line's columns
    assert list(report) == [
        "settings", "bundle", "device", "alert policy", "metrics port", "brokers", "credentials", "topics",
    ]  # fmt: skip
    failed = [name for name, (verdict, _) in report.items() if verdict == "FAIL"]
    assert lines[-1] == (f"{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "every check passed")
    return status, report


def only_failures(report: dict[str, tuple[str, str]]) -> set[str]:
    return {name for name, (verdict, _) in report.items() if verdict == "FAIL"}


def test_settings_that_cannot_be_used_are_the_first_failed_check(capsys, monkeypatch, bundle_path):
    monkeypatch.setenv("FLOWWARDEN_MAX_BATCH", "0")
    status, report = check(capsys, ["--bundle", str(bundle_path), *UNREACHABLE])
    assert status == 1 and only_failures(report) == {"settings"}
    assert "max_batch" in report["settings"][1] and "FLOWWARDEN_MAX_BATCH" in report["settings"][1]
    assert {verdict for verdict, _ in list(report.values())[1:]} == {"skip"}


def test_a_usage_error_is_status_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["check", "--no-such-flag"])
    assert exit_.value.code == 2


def test_a_bundle_that_fails_verification_fails_its_line(capsys, tmp_path):
    broken = make_bundle(tmp_path / "broken", version="x1")
    (broken / "model.json").write_text("{}", encoding="utf-8")
    status, report = check(capsys, ["--bundle", str(broken), *UNREACHABLE])
    assert status == 1 and only_failures(report) == {"bundle", "brokers"}
    assert "model.json" in report["bundle"][1]


def test_a_missing_gpu_fails_the_device_line(capsys, bundle_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    status, report = check(capsys, ["--bundle", str(bundle_path), "--device", "cuda", *UNREACHABLE])
    assert status == 1 and only_failures(report) == {"device", "brokers"}


def test_a_threshold_for_no_class_of_the_bundle_fails_the_alert_policy(capsys, bundle_path):
    argv = ["--bundle", str(bundle_path), "--class-threshold", "Portscna=0.9", *UNREACHABLE]
    status, report = check(capsys, argv)
    assert status == 1 and only_failures(report) == {"alert policy", "brokers"}
    assert "portscna" in report["alert policy"][1]


def test_an_allowlist_that_cannot_be_read_fails_the_alert_policy(capsys, bundle_path, tmp_path):
    allowlist = tmp_path / "allow.toml"
    allowlist.write_text("[[allow]]\nsrc = ['10.0.0.0/33']\n", encoding="utf-8")
    status, report = check(capsys, ["--bundle", str(bundle_path), "--allowlist", str(allowlist), *UNREACHABLE])
    assert status == 1 and only_failures(report) == {"alert policy", "brokers"}
    assert "entry 1" in report["alert policy"][1]


def test_a_taken_metrics_port_fails_its_line(capsys, bundle_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["--bundle", str(bundle_path), "--metrics-host", "127.0.0.1", "--metrics-port", str(port)]
        status, report = check(capsys, [*argv, *UNREACHABLE])
    assert status == 1 and only_failures(report) == {"metrics port", "brokers"}
    assert str(port) in report["metrics port"][1]


def test_unreachable_brokers_fail_and_skip_what_needs_them(capsys, bundle_path):
    status, report = check(capsys, ["--bundle", str(bundle_path), *UNREACHABLE])
    assert status == 1 and only_failures(report) == {"brokers"}
    assert "127.0.0.1:1" in report["brokers"][1]
    assert report["credentials"][0] == report["topics"][0] == "skip"


# --- against a broker --------------------------------------------------------------------------------------


def kafka_argv(bootstrap: str) -> list[str]:
    options = [part for key, value in client_config_from_env().items() for part in ("--kafka-option", f"{key}={value}")]
    return ["--bootstrap-servers", bootstrap, "--check-timeout", "20", "--metrics-port", "0", *options]


@pytest.mark.kafka
def test_a_ready_configuration_passes_every_check(capsys, kafka_bootstrap, new_topic, bundle_path, tmp_path):
    flows, alerts, dlq = new_topic(partitions=3, prefix="flows"), new_topic(prefix="alerts"), new_topic(prefix="dlq")
    settings = tmp_path / "settings.toml"
    settings.write_text(f'input_topic = "{flows}"\n', encoding="utf-8")
    argv = ["--config", str(settings), "--output-topic", alerts, "--dlq-topic", dlq, "--bundle", str(bundle_path)]
    status, report = check(capsys, [*argv, *kafka_argv(kafka_bootstrap)])
    assert status == 0 and not only_failures(report), report
    assert f"input {flows}: 3 partition(s)" in report["topics"][1]
    assert f"output {alerts}: 1 partition(s)" in report["topics"][1]


@pytest.mark.kafka
def test_missing_topics_fail_the_topics_line(capsys, kafka_bootstrap, new_topic, bundle_path):
    flows = new_topic(partitions=2, prefix="flows")
    missing = unique_name("nowhere")
    argv = ["--input-topic", flows, "--output-topic", missing, "--bundle", str(bundle_path)]
    status, report = check(capsys, [*argv, "--dlq-topic", unique_name("dlq"), *kafka_argv(kafka_bootstrap)])
    assert status == 1 and only_failures(report) == {"topics"}
    assert missing in report["topics"][1] and f"input {flows}: 2 partition(s)" in report["topics"][1]
    status, report = check(capsys, [*argv, "--create-topics", *kafka_argv(kafka_bootstrap)])
    assert status == 0 and "will be created" in report["topics"][1]


@pytest.mark.kafka
@pytest.mark.skipif(not EMBEDDED, reason="needs a listener without SASL: the embedded broker's")
def test_refused_credentials_fail_the_credentials_line(capsys, kafka_bootstrap, bundle_path):
    secret = "not-" + unique_name("the-password")
    sasl = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "nobody",
        "sasl.password": secret,
    }
    options = [part for key, value in sasl.items() for part in ("--kafka-option", f"{key}={value}")]
    argv = ["--bundle", str(bundle_path), "--bootstrap-servers", kafka_bootstrap, "--check-timeout", "20", *options]
    status, report = check(capsys, [*argv, "--metrics-port", "0"])
    assert status == 1 and only_failures(report) == {"credentials"}, report
    assert report["brokers"][0] == "ok" and report["topics"][0] == "skip"
    assert secret not in "".join(detail for _, detail in report.values())


def test_the_report_names_every_check_in_the_module_docstring():
    from detector.stream import check as module

    for name in module.CHECKS:
        assert f"``{name}``" in (module.__doc__ or ""), name
