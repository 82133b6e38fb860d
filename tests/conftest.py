"""Shared fixtures for tests that need a Kafka-protocol broker (mark them ``@pytest.mark.kafka``).

The session's broker is chosen once (:data:`tests.support.kafka.BROKER_KIND`): the cluster named by
``KAFKA_BOOTSTRAP_SERVERS``; else Apache Kafka, started here from the jars of ``make kafka`` when Java >= 17
and the jars are present; else the embedded Tansu broker (``KAFKA_TEST_BROKER=embedded`` forces it).

* ``kafka_broker`` / ``kafka_bootstrap``: that broker (one for the whole session) / its ``host:port[,...]``.
* ``new_topic``: makes a uniquely named topic per call (brokers are shared: never reuse a name).
* ``proxied_broker``: a broker whose every client byte goes through a
  :class:`~tests.support.tcpproxy.TcpProxy`, for outage tests. On Apache Kafka it is the session's broker
  through a second listener advertised at the proxy's port (the proxy is reset around each test); on Tansu a
  broker of its own; skipped on an external cluster, which cannot be re-advertised through a local proxy.
* ``apache_kafka``: the session's broker when it is Apache Kafka (or an external cluster); tests of
  Apache Kafka's behaviour that Tansu lacks (static membership, topic configurations) skip otherwise.
* ``kafka_cluster``: three Apache Kafka nodes (replication factor 3, ``min.insync.replicas=2``), started for
  the module that asks for it, for failover tests (``kill(node)`` / ``restart(node)``).

The terminal summary names the broker each Kafka test module ran on, and a failing test shows the tail of
the Apache Kafka logs written while it ran. The helpers that produce and consume are in
:mod:`tests.support.kafka`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import torch
from confluent_kafka.admin import AdminClient

from detector.stream.topics import ensure_topics
from detector.tools.broker import EmbeddedBroker
from tests.support import apache_kafka
from tests.support.apache_kafka import KafkaCluster
from tests.support.kafka import (
    BOOTSTRAP_ENV,
    BROKER_KIND,
    KafkaBroker,
    ProxiedBroker,
    client_config,
    client_config_from_env,
    embedded_description,
    unique_name,
)
from tests.support.tcpproxy import TcpProxy

_BROKERS_BY_MODULE = pytest.StashKey[dict[str, set[str]]]()
_LOG_MARKS = pytest.StashKey[dict[int, tuple[KafkaCluster, dict[int, int]]]]()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's broker (see the module docstring)."""
    if BROKER_KIND == "external":
        yield KafkaBroker(os.environ[BOOTSTRAP_ENV].strip(), f"external cluster ({BOOTSTRAP_ENV})")
        return
    if BROKER_KIND == "embedded":
        with EmbeddedBroker() as broker:
            yield KafkaBroker(broker.bootstrap_servers, embedded_description())
        return
    proxy = TcpProxy("127.0.0.1", 0)  # bound first: the broker advertises its port on the proxied listener
    try:
        with KafkaCluster(tmp_path_factory.mktemp("apache-kafka"), advertised_proxy_port=proxy.port) as cluster:
            proxy.target = cluster.proxied_target
            proxy.start()
            yield KafkaBroker(cluster.bootstrap_servers, cluster.description, cluster, proxy)
    finally:
        proxy.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``host:port[,...]`` of the cluster the kafka tests use."""
    return kafka_broker.bootstrap_servers


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """``new_topic(partitions=1, prefix="test", config=None) -> name``: a fresh, ready topic.

    On an external cluster the topics are deleted after the test (best effort); the suite's own brokers go
    away with the session.
    """
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "test", config: dict[str, str] | None = None) -> str:
        name = unique_name(prefix)
        ensure_topics(
            kafka_bootstrap, [name], partitions=partitions, config=config, client_config=client_config_from_env()
        )
        created.append(name)
        return name

    yield make
    if created and BROKER_KIND == "external":
        AdminClient(client_config(kafka_bootstrap)).delete_topics(created, operation_timeout=10)


@pytest.fixture
def proxied_broker(request: pytest.FixtureRequest) -> Iterator[ProxiedBroker]:
    """A broker that advertises a TCP proxy's port, so every client byte goes through the proxy."""
    if BROKER_KIND == "external":
        pytest.skip(f"{BOOTSTRAP_ENV} is set: a real cluster cannot be re-advertised through a local proxy")
    if BROKER_KIND == "apache":
        broker: KafkaBroker = request.getfixturevalue("kafka_broker")
        assert broker.proxy is not None
        broker.proxy.reset()
        try:
            yield ProxiedBroker(broker.description, broker.proxy, broker.cluster)
        finally:
            broker.proxy.reset()
        return
    proxy = TcpProxy("127.0.0.1", 0)  # bound now, so the broker can advertise its port; target set below
    try:
        with EmbeddedBroker(advertised_port=proxy.port) as embedded:
            proxy.target = ("127.0.0.1", embedded.port)
            proxy.start()
            yield ProxiedBroker(embedded_description(), proxy)
    finally:
        proxy.close()


@pytest.fixture
def apache_kafka_broker(kafka_broker: KafkaBroker) -> KafkaBroker:
    """The session's broker, for tests of what Apache Kafka does and Tansu does not; skips on Tansu."""
    if BROKER_KIND == "embedded":
        reason = apache_kafka.unavailable_reason() or "KAFKA_TEST_BROKER=embedded"
        pytest.skip(f"needs Apache Kafka, the tests run on the embedded broker: {reason}")
    return kafka_broker


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three Apache Kafka nodes of the module's own (failover tests); skips where Apache Kafka cannot run."""
    reason = apache_kafka.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with KafkaCluster(tmp_path_factory.mktemp("apache-kafka-cluster"), size=3) as cluster:
        yield cluster


# --- reporting: the broker of each module, the broker's log of a failing test ----------------------------------


def pytest_report_header(config: pytest.Config) -> str:
    if BROKER_KIND == "external":
        return f"kafka tests: external cluster at {os.environ[BOOTSTRAP_ENV]}"
    found = apache_kafka.distribution()
    if BROKER_KIND == "apache" and not isinstance(found, str):
        return f"kafka tests: {found.description} (Java {found.java_version}; jars in {found.libs})"
    why = "KAFKA_TEST_BROKER=embedded" if isinstance(found, apache_kafka.Distribution) else found
    return f"kafka tests: {embedded_description()} ({why})"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_BROKERS_BY_MODULE] = {}


def _brokers_used(item: pytest.Item) -> list[KafkaBroker | ProxiedBroker | KafkaCluster]:
    funcargs = getattr(item, "funcargs", {})
    return [value for value in funcargs.values() if isinstance(value, KafkaBroker | ProxiedBroker | KafkaCluster)]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Remember where each Apache Kafka log stood when the test body began."""
    marks = {}
    for used in _brokers_used(item):
        cluster = used if isinstance(used, KafkaCluster) else used.cluster
        if cluster is not None:
            marks[id(cluster)] = (cluster, cluster.log_marks())
    item.stash[_LOG_MARKS] = marks


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if call.when == "call":
        for used in _brokers_used(item):
            item.config.stash[_BROKERS_BY_MODULE].setdefault(item.location[0], set()).add(used.description)
    if report.failed and call.when in {"call", "teardown"}:
        for cluster, marks in item.stash.get(_LOG_MARKS, {}).values():
            report.sections.append((f"{cluster.description} log", cluster.log_tail(marks)))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    modules = terminalreporter.config.stash.get(_BROKERS_BY_MODULE, {})
    if not modules:
        return
    terminalreporter.write_sep("-", "Kafka broker per test module")
    for module in sorted(modules):
        terminalreporter.write_line(f"{module}: {'; '.join(sorted(modules[module]))}")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """For modules making thousands of tiny model calls (the property tests): one torch thread each. On a busy
    CPU more threads make each call some 100x slower as they wait for one another."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
