"""``detector run`` against Apache Kafka over SASL_SSL, with credentials from a secrets directory.

The module starts one Apache Kafka broker of its own with a ``SASL_SSL`` listener: TLS with a certificate
signed by a CA the test makes (:mod:`tests.support.certificates`), client certificates required, and
SCRAM-SHA-512 with one user added when the storage is formatted (KRaft keeps SCRAM credentials in its
metadata log). No authorizer: an authenticated client may do anything. The worker is a real process that
reads its SCRAM password (``kafka.sasl.password``) and its client key (``kafka.ssl.key.pem``) from secret
files and trusts the CA through ``--kafka-option ssl.ca.location=...``:

* with the right password it scores records end to end (a SASL_SSL test consumer reads the alerts), and
  neither secret, nor the broker's private key, appears in its output or its /metrics exposition;
* with a wrong password it ends with exit status 1 and one error line naming the cause.

Skips with the reason where Apache Kafka cannot run (no Java 17, no jars from ``make kafka``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from detector.stream.topics import ensure_topics
from tests.support import apache_kafka
from tests.support.apache_kafka import KafkaCluster
from tests.support.bundles import make_bundle
from tests.support.certificates import CertificateAuthority, Issued
from tests.support.generated import generated_rows
from tests.support.kafka import KafkaBroker, consume_exactly, produce_values, unique_name
from tests.support.worker import WorkerProcess, alert_sources, flow_values, metric_value, run_flags, worker_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

LISTENER = "SECURE"
MECHANISM = "SCRAM-SHA-512"
USER = "flowwarden-worker"
RECORDS = 30
# The broker's side of SCRAM needs a login module entry; it names no user (brokers talk plaintext to each other).
SCRAM_SERVER_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class Credentials:
    """What a client of the secured listener needs, and every secret the test must never see in an output."""

    password: str
    ca_file: Path
    client_certificate_file: Path
    client: Issued
    broker: Issued

    def public_options(self) -> dict[str, str]:
        """librdkafka properties that are not secret: fine on a command line."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": USER,
            "ssl.ca.location": str(self.ca_file),
            "ssl.certificate.location": str(self.client_certificate_file),
        }

    def client_config(self) -> dict[str, str]:
        """The test's own clients: everything in one configuration."""
        return {**self.public_options(), "sasl.password": self.password, "ssl.key.pem": self.client.key_pem.decode()}

    def leaks(self, text: str) -> list[str]:
        """Which secrets ``text`` shows: the password, or any line of either private key."""
        found = ["the SCRAM password"] if self.password in text else []
        for name, issued in (("the client's private key", self.client), ("the broker's private key", self.broker)):
            if any(line in text for line in issued.key_body_lines()):
                found.append(name)
        return found


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    reason = apache_kafka.unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs Apache Kafka for a SASL_SSL listener: {reason}")
    directory = tmp_path_factory.mktemp("tls")
    authority = CertificateAuthority()
    broker = authority.issue("localhost", hosts=(apache_kafka.HOST, "localhost"))
    client = authority.issue(USER, client=True)
    (directory / "ca.pem").write_bytes(authority.certificate_pem)
    (directory / "broker-keystore.pem").write_bytes(broker.keystore_pem)
    (directory / "client.pem").write_bytes(client.certificate_pem)
    return Credentials(secrets.token_hex(16), directory / "ca.pem", directory / "client.pem", client, broker)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory, credentials: Credentials) -> Iterator[KafkaBroker]:
    """One Apache Kafka broker for the module with a SASL_SSL listener (see the module docstring)."""
    prefix = f"listener.name.{LISTENER.lower()}."
    tls = credentials.ca_file.parent
    config = {
        "sasl.enabled.mechanisms": MECHANISM,
        f"{prefix}{MECHANISM.lower()}.sasl.jaas.config": SCRAM_SERVER_LOGIN,
        f"{prefix}ssl.keystore.type": "PEM",
        f"{prefix}ssl.keystore.location": str(tls / "broker-keystore.pem"),
        f"{prefix}ssl.truststore.type": "PEM",
        f"{prefix}ssl.truststore.location": str(credentials.ca_file),
        f"{prefix}ssl.client.auth": "required",
    }
    user = f"{MECHANISM}=[name={USER},password={credentials.password}]"
    with KafkaCluster(
        tmp_path_factory.mktemp("apache-kafka-sasl"),
        config=config,
        extra_listeners={LISTENER: "SASL_SSL"},
        format_options=["--add-scram", user],
    ) as cluster:
        yield KafkaBroker(cluster.listener_bootstrap(LISTENER), f"{cluster.description}, SASL_SSL {MECHANISM}", cluster)


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "v1", version="v1")


def secrets_dir(directory: Path, credentials: Credentials, password: str) -> Path:
    """A secrets directory as Kubernetes mounts one: a file per secret librdkafka property, owner-only."""
    directory.mkdir(mode=0o700)
    for name, value in (("kafka.sasl.password", password), ("kafka.ssl.key.pem", credentials.client.key_pem.decode())):
        path = directory / name
        path.touch(mode=0o600)
        path.write_text(value + "\n")
    return directory


def worker_argv(
    broker: KafkaBroker, credentials: Credentials, bundle: Path, topics: dict[str, str], secret_files: Path
) -> list[str]:
    """``detector run`` flags for the secured listener: the non-secret options as flags, the secrets as files."""
    settings = worker_settings(
        broker.bootstrap_servers,
        **topics,
        group_id=unique_name("detector"),
        bundle=bundle,
        emit="all",
        kafka=credentials.public_options(),
    )
    flags = run_flags(settings)
    assert not credentials.leaks(" ".join(flags)), "the command line carries no secret: they come from files"
    return [*flags, "--secrets-dir", str(secret_files)]


def secured_topics(broker: KafkaBroker, credentials: Credentials) -> dict[str, str]:
    names = {
        "input_topic": unique_name("flows"),
        "output_topic": unique_name("alerts"),
        "dlq_topic": unique_name("dlq"),
    }
    ensure_topics(broker.bootstrap_servers, names.values(), client_config=credentials.client_config())
    return names


def test_a_worker_with_credentials_from_secret_files_scores_over_sasl_ssl_and_shows_no_secret(
    sasl_broker, credentials, bundle_path, tmp_path
):
    topics = secured_topics(sasl_broker, credentials)
    values = flow_values(generated_rows(0)[:RECORDS])
    produce_values(sasl_broker.bootstrap_servers, topics["input_topic"], values, config=credentials.client_config())
    argv = worker_argv(
        sasl_broker,
        credentials,
        bundle_path,
        topics,
        secrets_dir(tmp_path / "secrets", credentials, credentials.password),
    )

    with WorkerProcess(argv, tmp_path / "worker.log") as worker:
        alerts = consume_exactly(
            sasl_broker.bootstrap_servers,
            topics["output_topic"],
            RECORDS,
            read_committed=True,
            timeout=120,
            config=credentials.client_config(),
        )
        exposition = worker.metrics()
        assert worker.terminate() == 0, worker.text()[-3000:]
        output = worker.text()
        events = worker.events()

    # Every record scored once, end to end through the secured listener.
    assert sorted(alert_sources(alerts)) == [(0, offset) for offset in range(RECORDS)]
    assert metric_value(exposition, "flowwarden_records_in_total") == RECORDS
    # The secrets reached the clients (the broker let the worker in) and nothing shows them.
    assert credentials.leaks(output) == [], "the worker's stdout/stderr shows a secret"
    assert credentials.leaks(exposition) == [], "the /metrics exposition shows a secret"
    assert credentials.leaks(b"".join(m.value() for m in alerts).decode()) == []
    started = next(event for event in events if event["event"] == "starting")
    for config in (started["consumer_config"], started["producer_config"]):
        assert config["sasl.password"] == "***" and config["ssl.key.pem"] == "***"
        assert config["sasl.username"] == USER, "what is not secret stays readable"
    assert len(events) == len([line for line in output.splitlines() if line.strip()]), "every line is a JSON event"


def test_a_wrong_password_ends_the_worker_with_exit_1_and_one_line_naming_the_cause(
    sasl_broker, credentials, bundle_path, tmp_path
):
    topics = secured_topics(sasl_broker, credentials)
    wrong = "wrong-" + secrets.token_hex(12)
    argv = worker_argv(
        sasl_broker, credentials, bundle_path, topics, secrets_dir(tmp_path / "secrets", credentials, wrong)
    )

    with WorkerProcess(argv, tmp_path / "worker.log") as worker:
        status = worker.wait(timeout=120)
        output = worker.text()
        events = worker.events()

    assert status == 1, output[-3000:]
    assert "Traceback" not in output
    assert len(events) == len([line for line in output.splitlines() if line.strip()]), "every line is a JSON event"
    # The worker says why in one line, the last it writes and its only error. librdkafka's own log lines about
    # the refused handshake (level error, component librdkafka.*) say so too, before it or while it closes.
    own = [event for event in events if not event.get("component", "").startswith("librdkafka")]
    own_errors = [event for event in own if event["level"] == "error"]
    assert own_errors == [own[-1]], f"one error line of the worker's, its last; got {orjson.dumps(own_errors).decode()}"
    cause = own[-1]
    assert cause["event"] == "fatal: the worker stops without committing further"
    assert "the cluster refused the credentials" in cause["error"]
    assert "SASL authentication error" in cause["error"] and MECHANISM in cause["error"], cause["error"]
    assert wrong not in output and credentials.leaks(output) == []
