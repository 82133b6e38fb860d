"""Shared fixtures for tests that need a Kafka-protocol broker (mark them ``@pytest.mark.kafka``).

* ``kafka_bootstrap``: ``KAFKA_BOOTSTRAP_SERVERS`` when set (a real cluster; extra librdkafka settings as
  a JSON object in ``KAFKA_CLIENT_CONFIG``), otherwise one embedded Tansu broker for the whole session.
* ``new_topic``: makes a uniquely named topic per call (real clusters are shared: never reuse a name).
* ``proxied_broker``: a broker of its own behind a :class:`~tests.support.tcpproxy.TcpProxy`, for outage
  tests; skipped on a real cluster, which cannot be re-advertised through a local proxy.

The helpers that produce and consume are in :mod:`tests.support.kafka`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from detector.stream.topics import ensure_topics
from detector.tools.broker import EmbeddedBroker
from tests.support.kafka import BOOTSTRAP_ENV, ProxiedBroker, client_config, client_config_from_env, unique_name
from tests.support.tcpproxy import TcpProxy


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port[,...]`` of the cluster the kafka tests use."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """``new_topic(partitions=1, prefix="test", config=None) -> name``: a fresh, ready topic.

    On a real cluster the topics are deleted after the test (best effort); the embedded broker's memory
    goes away with it.
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
    if created and os.environ.get(BOOTSTRAP_ENV):
        AdminClient(client_config(kafka_bootstrap)).delete_topics(created, operation_timeout=10)


@pytest.fixture
def proxied_broker() -> Iterator[ProxiedBroker]:
    """A fresh embedded broker that advertises a TCP proxy's port, so every client byte goes through it."""
    if os.environ.get(BOOTSTRAP_ENV):
        pytest.skip(f"{BOOTSTRAP_ENV} is set: a real cluster cannot be re-advertised through a local proxy")
    proxy = TcpProxy("127.0.0.1", 0)  # bound now, so the broker can advertise its port; target set below
    try:
        with EmbeddedBroker(advertised_port=proxy.port) as broker:
            proxy.target = ("127.0.0.1", broker.port)
            proxy.start()
            yield ProxiedBroker(broker, proxy)
    finally:
        proxy.close()
